"""deploy/aws/shop.yaml, the production stack on AWS, checked without AWS.

cfn-lint checks that CloudFormation would accept it; the checks here prove what the design
needs and CloudFormation does not care about: each tier reachable only from the tier in front
of it, nothing from a CIDR but the balancer, Multi-AZ and automatic failover on, storage and
transit encrypted, every tier in at least two Availability Zones, no stickiness, secrets that
never appear in plain configuration, HSTS at the HTTPS listener, AWS WAF in front of the
balancer with the same rate rules as HAProxy's in the other topologies, and the product images'
bucket private, TLS-only and reachable by the tasks' role alone, on its prefix alone; with
CloudFrontDomainName, CloudFront in front keeping anonymous pages and static files but nothing
personal, and the balancer answering CloudFront alone; with Metrics=prometheus, a collector in
each task scraping the shop's metrics port over localhost into this stack's Amazon Managed
Service for Prometheus workspace, without taking the shop down with it or outgrowing the task.
(None of it has been deployed from here: the S3 image store is tested against moto, not AWS;
CloudFront and the collector only by these checks.)

Each ``check_*`` function returns the violations it finds (empty: fine). They run for several
sets of parameters (two or three AZs, zero to three replicas, with and without HTTPS), and the
tests at the end prove they bite: they break a copy of the template on purpose and expect a
complaint.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from shop.config import Settings
from tests.support import REQUIRE_SERVICES
from tests.support.aws_template import (
    RDS_MEMORY_GIB,
    TEMPLATE,
    Stack,
    Template,
    load_template,
    logical_id,
    rds_max_connections,
    yaml_aliases,
)

APP_TASK, APP_CONTAINER = "TaskDefinition", "shop"
MIGRATE_TASK, MIGRATE_CONTAINER = "MigrateTaskDefinition", "migrate"
WORLD = ("0.0.0.0/0", "::/0")
SECRET_NAME = ("PASSWORD", "SECRET", "TOKEN", "KEY")
TLS_SSLMODES = {"require", "verify-ca", "verify-full"}
CERTIFICATE = "arn:aws:acm:eu-west-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
EDGE_CERTIFICATE = CERTIFICATE.replace("eu-west-1", "us-east-1")
CLOUDFRONT = {
    "CertificateArn": CERTIFICATE,
    "CloudFrontDomainName": "shop.example.com",
    "CloudFrontCertificateArn": EDGE_CERTIFICATE,
}

PARAMETER_SETS = {
    "defaults": {},
    "three-azs-three-replicas-https": {
        "AvailabilityZoneCount": "3",
        "ReplicaCount": "3",
        "CertificateArn": CERTIFICATE,
    },
    "no-replicas": {"ReplicaCount": "0"},
    "two-replicas": {"ReplicaCount": "2"},
    "images-in-the-database": {"ImageStorage": "database"},
    "cloudfront": CLOUDFRONT,
    "redis-without-cluster-mode": {"CacheClusterMode": "disabled", "CacheNodeCount": "5"},
    "three-shards-two-replicas-each-alarms-mailed": {
        "CacheShards": "3",
        "CacheReplicasPerShard": "2",
        "ReplicaCount": "2",
        "AlarmEmail": "oncall@example.com",
    },
    "hotfix-deployment": {"DeploymentAlarmRollback": "false"},
    "no-metrics": {"Metrics": "none"},
    "no-metrics-images-in-the-database": {"Metrics": "none", "ImageStorage": "database"},
    "small-database-large-tasks": {
        "DatabaseInstanceClass": "db.t4g.medium",
        "TaskCpu": "4096",
        "TaskMemory": "8192",
    },
}


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template()


@pytest.fixture(params=list(PARAMETER_SETS), scope="module")
def stack(request, template) -> Stack:
    return Stack.of(template, Image="example/shop:1", **PARAMETER_SETS[request.param])


def app_port(stack: Stack) -> int:
    (mapping,) = stack.containers(APP_TASK)[APP_CONTAINER]["PortMappings"]
    return int(mapping["ContainerPort"])


def the_one(stack: Stack, kind: str) -> tuple[str, dict[str, Any]]:
    found = stack.resources(kind)
    assert len(found) == 1, f"expected one {kind}, found {sorted(found)}"
    return next(iter(found.items()))


def primary_database(stack: Stack) -> tuple[str, dict[str, Any]]:
    primaries = {
        name: props
        for name, props in stack.resources("AWS::RDS::DBInstance").items()
        if "SourceDBInstanceIdentifier" not in props
    }
    assert len(primaries) == 1, f"expected one primary DB instance, found {sorted(primaries)}"
    return next(iter(primaries.items()))


def is_true(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


# -- security groups: the chain from the balancer inwards --------------------------------------


def chain(stack: Stack) -> dict[str, set[tuple[int, str | None]]]:
    """Each security group: exactly the (port, source group) its ingress admits (None: the
    world). The app reaches the primary only through RDS Proxy; the migration task, which
    nothing reaches, is the primary's one direct client."""
    return {
        "LoadBalancerSecurityGroup": {(80, None), (443, None)},
        "AppSecurityGroup": {(app_port(stack), "LoadBalancerSecurityGroup")},
        "MigrationSecurityGroup": set(),
        "ProxySecurityGroup": {(5432, "AppSecurityGroup")},
        "DatabaseSecurityGroup": {(5432, "ProxySecurityGroup"), (5432, "MigrationSecurityGroup")},
        "ReplicaSecurityGroup": {(5432, "AppSecurityGroup")},
        "CacheSecurityGroup": {(6379, "AppSecurityGroup")},
    }


def ingress_rules(stack: Stack) -> list[tuple[str, dict[str, Any]]]:
    """(group, rule) for every ingress rule, inline or a separate resource."""
    rules = []
    for group, props in stack.resources("AWS::EC2::SecurityGroup").items():
        rules += [(group, rule) for rule in props.get("SecurityGroupIngress", [])]
    for name, props in stack.resources("AWS::EC2::SecurityGroupIngress").items():
        group = logical_id(props.get("GroupId")) or f"{name}: GroupId {props.get('GroupId')!r}"
        rules.append((group, props))
    return rules


def check_security_group_chain(stack: Stack) -> list[str]:
    problems = []
    expected = chain(stack)
    groups = set(stack.resources("AWS::EC2::SecurityGroup"))
    if groups != set(expected):
        problems.append(f"security groups are {sorted(groups)}, expected {sorted(expected)}")
    seen: dict[str, set[tuple[int, str | None]]] = {group: set() for group in expected}
    for group, rule in ingress_rules(stack):
        if group not in expected:
            problems.append(f"ingress on {group}, which is not one of {sorted(expected)}")
            continue
        admitted = expected[group]
        ports = {port for port, _ in admitted}
        fronts = sorted({str(front) for _, front in admitted})
        where = f"{group} ingress {rule}"
        if str(rule.get("IpProtocol")) != "tcp":
            problems.append(f"{where}: protocol must be tcp")
        low, high = rule.get("FromPort"), rule.get("ToPort")
        if low != high or low not in ports:
            problems.append(f"{where}: ports {low}-{high}, expected one of {sorted(ports)}")
        if (low, None) in admitted:
            if rule.get("CidrIp", rule.get("CidrIpv6")) not in WORLD:
                problems.append(f"{where}: the balancer is open to the world and nothing else")
            seen[group].add((low, None))
            continue
        cidrs = [key for key in ("CidrIp", "CidrIpv6", "SourcePrefixListId") if key in rule]
        if cidrs:
            problems.append(f"{where}: open to {cidrs} (a range), not only to {fronts}")
        source = logical_id(rule.get("SourceSecurityGroupId"))
        if (low, source) not in admitted:
            problems.append(f"{where}: comes from {source or 'no group'}, not {fronts}")
        seen[group].add((low, source))
    for group, admitted in expected.items():
        if group in groups and seen[group] != admitted:
            problems.append(f"{group} admits {sorted(map(str, seen[group]))}, not {admitted}")
    problems += _egress(stack)
    problems += _attachments(stack)
    return problems


def _egress(stack: Stack) -> list[str]:
    """Outbound, each tier talks only inwards: the balancer to the app port, the app to RDS
    Proxy, the replicas, Redis and AWS's APIs on 443, the proxy to the primary alone, the
    migration task to the primary and the APIs. No separate egress resources to overlook."""
    problems = [
        f"{name}: egress rules belong inline in their group"
        for name in stack.resources("AWS::EC2::SecurityGroupEgress")
    ]
    allowed = {
        "LoadBalancerSecurityGroup": {(app_port(stack), "AppSecurityGroup")},
        "AppSecurityGroup": {
            (443, "0.0.0.0/0"),
            (5432, "ProxySecurityGroup"),
            (5432, "ReplicaSecurityGroup"),
            (6379, "CacheSecurityGroup"),
        },
        "ProxySecurityGroup": {(5432, "DatabaseSecurityGroup")},
        "MigrationSecurityGroup": {(443, "0.0.0.0/0"), (5432, "DatabaseSecurityGroup")},
    }
    for group, expected in allowed.items():
        rules = stack.properties(group).get("SecurityGroupEgress", [])
        found = {
            (
                rule.get("FromPort") if rule.get("FromPort") == rule.get("ToPort") else None,
                logical_id(rule.get("DestinationSecurityGroupId")) or rule.get("CidrIp"),
            )
            for rule in rules
            if str(rule.get("IpProtocol")) == "tcp"
        }
        if len(found) != len(rules) or found != expected:
            problems.append(f"{group} egress is {sorted(map(str, found))}, expected {expected}")
    return problems


def _attachments(stack: Stack) -> list[str]:
    """Every tier's resources sit in their own group, and only in it."""
    problems = []

    def expect(what: str, refs: Any, group: str) -> None:
        names = [logical_id(ref) for ref in refs or []]
        if names != [group]:
            problems.append(f"{what} is in {names}, expected [{group!r}]")

    for name, props in stack.resources("AWS::ElasticLoadBalancingV2::LoadBalancer").items():
        expect(name, props.get("SecurityGroups"), "LoadBalancerSecurityGroup")
    for name, props in stack.resources("AWS::ECS::Service").items():
        vpc = props["NetworkConfiguration"]["AwsvpcConfiguration"]
        expect(name, vpc.get("SecurityGroups"), "AppSecurityGroup")
        if vpc.get("AssignPublicIp") != "DISABLED":
            problems.append(f"{name}: tasks must have no public IP")
    for name, props in stack.resources("AWS::RDS::DBInstance").items():
        group = "ReplicaSecurityGroup" if "SourceDBInstanceIdentifier" in props else None
        expect(name, props.get("VPCSecurityGroups"), group or "DatabaseSecurityGroup")
        if is_true(props.get("PubliclyAccessible")):
            problems.append(f"{name} is publicly accessible")
    for name, props in stack.resources("AWS::RDS::DBProxy").items():
        expect(name, props.get("VpcSecurityGroupIds"), "ProxySecurityGroup")
    outputs = stack.template.get("Outputs", {})
    migration = stack.resolve(outputs.get("MigrationSecurityGroup", {}).get("Value"))
    if logical_id(migration) != "MigrationSecurityGroup":
        problems.append("the MigrationSecurityGroup output (aws ecs run-task) must name its group")
    for name, props in stack.resources("AWS::ElastiCache::ReplicationGroup").items():
        expect(name, props.get("SecurityGroupIds"), "CacheSecurityGroup")
    return problems


# -- Multi-AZ and failover -----------------------------------------------------------------


def subnet_azs(stack: Stack, refs: list[Any]) -> list[str]:
    return [stack.properties(logical_id(ref))["AvailabilityZone"] for ref in refs]


def tiers(stack: Stack) -> dict[str, list[Any]]:
    """Where each tier runs: the subnets that its resources name."""
    _, balancer = the_one(stack, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    _, service = the_one(stack, "AWS::ECS::Service")
    _, databases = the_one(stack, "AWS::RDS::DBSubnetGroup")
    _, caches = the_one(stack, "AWS::ElastiCache::SubnetGroup")
    return {
        "balancer": balancer["Subnets"],
        "app": service["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"],
        "database": databases["SubnetIds"],
        "cache": caches["SubnetIds"],
    }


def check_multi_az(stack: Stack) -> list[str]:
    problems = []
    wanted = int(stack.parameters["AvailabilityZoneCount"])
    for tier, subnets in tiers(stack).items():
        azs = subnet_azs(stack, subnets)
        if len(set(azs)) < 2 or len(set(azs)) != wanted or len(azs) != len(set(azs)):
            problems.append(f"the {tier} tier's subnets are in {azs}, not {wanted} distinct AZs")
    name, database = primary_database(stack)
    if not is_true(database.get("MultiAZ")):
        problems.append(f"{name}: MultiAZ must be on (a standby in another AZ, failover)")
    for name, group in stack.resources("AWS::ElastiCache::ReplicationGroup").items():
        if not is_true(group.get("MultiAZEnabled")):
            problems.append(f"{name}: MultiAZEnabled must be on")
        if not is_true(group.get("AutomaticFailoverEnabled")):
            problems.append(f"{name}: AutomaticFailoverEnabled must be on")
        if group.get("ClusterMode") == "enabled":
            if int(group.get("ReplicasPerNodeGroup", 0)) < 1:
                problems.append(f"{name}: a replica per shard to fail over to needs >= 1")
        elif int(group.get("NumCacheClusters", 1)) < 2:
            problems.append(f"{name}: a replica to fail over to needs NumCacheClusters >= 2")
    _, target = the_one(stack, "AWS::ApplicationAutoScaling::ScalableTarget")
    if int(target["MinCapacity"]) < 2:
        problems.append("the service may scale in below two tasks (one AZ)")
    return problems


# -- encryption ------------------------------------------------------------------------------


def check_encryption(stack: Stack) -> list[str]:
    problems = []
    name, database = primary_database(stack)
    if not is_true(database.get("StorageEncrypted")):
        problems.append(f"{name}: StorageEncrypted must be on (replicas inherit it)")
    for instance, props in stack.resources("AWS::RDS::DBInstance").items():
        group = logical_id(props.get("DBParameterGroupName"))
        parameters = stack.properties(group).get("Parameters", {}) if group else {}
        if str(parameters.get("rds.force_ssl")) != "1":
            problems.append(f"{instance}: its parameter group must set rds.force_ssl = 1")
    for cache, group in stack.resources("AWS::ElastiCache::ReplicationGroup").items():
        if not is_true(group.get("AtRestEncryptionEnabled")):
            problems.append(f"{cache}: AtRestEncryptionEnabled must be on")
        if not is_true(group.get("TransitEncryptionEnabled")):
            problems.append(f"{cache}: TransitEncryptionEnabled must be on")
        if group.get("TransitEncryptionMode", "required") != "required":
            problems.append(f"{cache}: TransitEncryptionMode must be required")
        if "resolve:secretsmanager" not in str(group.get("AuthToken", "")):
            problems.append(f"{cache}: AuthToken must come from Secrets Manager")
    env = stack.environment(APP_TASK, APP_CONTAINER)
    if not env.get("SHOP_REDIS_URL", "").startswith("rediss://"):
        problems.append(f"SHOP_REDIS_URL must be rediss:// (TLS), not {env.get('SHOP_REDIS_URL')}")
    urls = [env.get("SHOP_DATABASE_URL", "")]
    urls += Settings.from_env({"SHOP_REPLICA_URLS": env.get("SHOP_REPLICA_URLS", "")}).replica_urls
    urls.append(stack.environment(MIGRATE_TASK, MIGRATE_CONTAINER).get("SHOP_DATABASE_URL", ""))
    for proxy, props in stack.resources("AWS::RDS::DBProxy").items():
        if not is_true(props.get("RequireTLS")):
            problems.append(f"{proxy}: RequireTLS must be on")
    for url in urls:
        sslmode = parse_qs(urlsplit(url).query).get("sslmode", [""])[0]
        if sslmode not in TLS_SSLMODES:
            problems.append(f"{url}: sslmode={sslmode!r}, expected one of {sorted(TLS_SSLMODES)}")
    return problems


# -- the balancer ----------------------------------------------------------------------------


def check_no_stickiness(stack: Stack) -> list[str]:
    problems = []
    for name, group in stack.resources("AWS::ElasticLoadBalancingV2::TargetGroup").items():
        attributes = {a["Key"]: str(a["Value"]) for a in group.get("TargetGroupAttributes", [])}
        if attributes.get("stickiness.enabled") != "false":
            problems.append(
                f'{name}: stickiness.enabled must be stated "false", '
                f"is {attributes.get('stickiness.enabled')!r}"
            )
        if group.get("HealthCheckPath") != "/readyz":
            problems.append(f"{name}: the health check must ask /readyz")
    kinds = ("AWS::ElasticLoadBalancingV2::Listener", "AWS::ElasticLoadBalancingV2::ListenerRule")
    for kind in kinds:
        for name, listener in stack.resources(kind).items():
            for action in listener.get("DefaultActions", []) + listener.get("Actions", []):
                sticky = action.get("ForwardConfig", {}).get("TargetGroupStickinessConfig", {})
                if is_true(sticky.get("Enabled")):
                    problems.append(f"{name}: a forward action turns stickiness on")
    return problems


# -- secrets ---------------------------------------------------------------------------------


def check_secrets(stack: Stack) -> list[str]:
    problems = []
    secrets = set(stack.resources("AWS::SecretsManager::Secret"))
    for task in (APP_TASK, MIGRATE_TASK):
        for container, spec in stack.containers(task).items():
            for item in spec.get("Environment", []):
                name, value = item["Name"], str(item["Value"])
                if any(word in name.upper() for word in SECRET_NAME) or "resolve:" in value:
                    problems.append(f"{task}/{container}: {name} is a secret in plain env")
                parts = urlsplit(value) if "://" in value else None
                if parts is not None and parts.password:
                    problems.append(f"{task}/{container}: {name} carries a password")
            if container not in (APP_CONTAINER, MIGRATE_CONTAINER):
                continue  # a sidecar needs none of them (check_metrics: it is given none)
            given = {item["Name"]: str(item["ValueFrom"]) for item in spec.get("Secrets", [])}
            for name in ("PGPASSWORD", "SHOP_REDIS_PASSWORD", "SHOP_SECRET_KEY"):
                if logical_id(given.get(name, "").split(":")[0]) not in secrets:
                    problems.append(f"{task}/{container}: {name} must come from a template secret")
    _, database = primary_database(stack)
    if "resolve:secretsmanager" not in str(database.get("MasterUserPassword", "")):
        problems.append("the database's MasterUserPassword must be a Secrets Manager reference")
    for name in stack.template.get("Parameters", {}):
        if any(word in name.upper() for word in ("PASSWORD", "SECRET", "TOKEN")):
            problems.append(f"parameter {name}: secrets are generated, never passed in")
    return problems


# -- the edge: HSTS at the HTTPS listener, AWS WAF in front of the balancer ------------------

HSTS_ATTRIBUTE = "routing.http.response.strict_transport_security.header_value"
HSTS = "max-age=63072000; includeSubDomains"
# A POST to one of these (the path starts with it) is a credential request; the same list as
# HAProxy's credential_path (tests/deploy/test_edge_rules.py).
CREDENTIAL_PREFIXES = {
    "/login", "/register", "/password/", "/api/v1/session/login", "/api/v1/users",
    "/api/v1/password/",
}  # fmt: skip
METHOD_POST = {
    "ByteMatchStatement": {
        "FieldToMatch": {"Method": {}},
        "PositionalConstraint": "EXACTLY",
        "SearchString": "POST",
        "TextTransformations": [{"Priority": 0, "Type": "NONE"}],
    }
}


def check_hsts(stack: Stack) -> list[str]:
    problems = []
    for name, listener in stack.resources("AWS::ElasticLoadBalancingV2::Listener").items():
        attributes = {a["Key"]: str(a["Value"]) for a in listener.get("ListenerAttributes", [])}
        if listener.get("Protocol") == "HTTPS" and attributes.get(HSTS_ATTRIBUTE) != HSTS:
            problems.append(f"{name}: the HTTPS listener must send HSTS, {HSTS_ATTRIBUTE}={HSTS}")
    return problems


def _visible(where: str, config: dict[str, Any]) -> list[str]:
    if not (
        is_true(config.get("CloudWatchMetricsEnabled"))
        and is_true(config.get("SampledRequestsEnabled"))
    ):
        return [f"{where}: CloudWatch metrics and sampled requests must be on"]
    return []


def _rate_limit_answer(where: str, action: dict[str, Any], bodies: dict[str, Any]) -> list[str]:
    """Block with 429, Retry-After and the shop's JSON error shape (code rate_limited)."""
    response = action.get("Block", {}).get("CustomResponse", {})
    headers = {h["Name"].lower(): h["Value"] for h in response.get("ResponseHeaders", [])}
    body = bodies.get(response.get("CustomResponseBodyKey"), {})
    try:
        error = json.loads(body.get("Content", "")).get("error", {})
    except ValueError:
        error = {}
    if (
        str(response.get("ResponseCode")) != "429"
        or not str(headers.get("retry-after", "")).isdigit()
        or body.get("ContentType") != "APPLICATION_JSON"
        or error.get("code") != "rate_limited"
        or not error.get("message")
    ):
        return [f"{where}: must block with 429, Retry-After and the JSON error rate_limited"]
    return []


def check_waf(stack: Stack) -> list[str]:
    """One regional web ACL on the balancer: a per-address rate rule, a much tighter one on
    credential POSTs, both answering 429 in the shop's error shape with their limits as
    parameters, AWS's common rule set, and metrics everywhere."""
    acls = stack.resources("AWS::WAFv2::WebACL")
    if len(acls) != 1:
        return [f"expected one AWS::WAFv2::WebACL, found {sorted(acls)}"]
    ((name, acl),) = acls.items()
    problems = _visible(name, acl.get("VisibilityConfig", {}))
    if acl.get("Scope") != "REGIONAL":
        problems.append(f"{name}: Scope must be REGIONAL (an ALB's web ACL)")
    if acl.get("DefaultAction") != {"Allow": {}}:
        problems.append(f"{name}: DefaultAction must be Allow (the rules block)")
    associations = [
        (logical_id(a.get("ResourceArn")), logical_id(a.get("WebACLArn")))
        for a in stack.resources("AWS::WAFv2::WebACLAssociation").values()
    ]
    if associations != [("LoadBalancer", name)]:
        problems.append(f"{name} must be associated with the LoadBalancer: {associations}")
    raw_rules = {r["Name"]: r for r in stack.template["Resources"][name]["Properties"]["Rules"]}
    bodies = acl.get("CustomResponseBodies", {})
    per_minute: dict[str, float] = {}
    managed = []
    for rule in acl.get("Rules", []):
        where = f"{name} rule {rule.get('Name')}"
        problems += _visible(where, rule.get("VisibilityConfig", {}))
        statement = rule.get("Statement", {})
        if "ManagedRuleGroupStatement" in statement:
            managed.append((statement["ManagedRuleGroupStatement"], rule.get("OverrideAction")))
            continue
        rate = statement.get("RateBasedStatement")
        if rate is None:
            continue
        kind = "credential" if "ScopeDownStatement" in rate else "general"
        if stack.condition("UseCloudFront"):
            # Behind CloudFront the balancer's peer is a CloudFront server: count the viewer's
            # address, which CloudFront's function writes (never the viewer).
            forwarded = rate.get("ForwardedIPConfig", {})
            if rate.get("AggregateKeyType") != "FORWARDED_IP" or (
                forwarded.get("HeaderName", "").lower() != VIEWER_ADDRESS
            ):
                problems.append(f"{where}: must count per viewer address ({VIEWER_ADDRESS})")
        elif rate.get("AggregateKeyType") != "IP":
            problems.append(f"{where}: must count per client address (AggregateKeyType IP)")
        limit = raw_rules[rule["Name"]]["Statement"]["RateBasedStatement"].get("Limit")
        if not (isinstance(limit, dict) and limit.get("Ref") in stack.template["Parameters"]):
            problems.append(f"{where}: its Limit must be a parameter, is {limit!r}")
        window = int(rate.get("EvaluationWindowSec", 300))
        per_minute[kind] = int(rate.get("Limit", 0)) * 60 / window
        problems += _rate_limit_answer(where, rule.get("Action", {}), bodies)
        if kind == "credential":
            problems += _credential_scope(where, rate["ScopeDownStatement"])
    if set(per_minute) != {"general", "credential"}:
        problems.append(f"{name}: needs a general and a credential rate rule, has {per_minute}")
    elif per_minute["credential"] * 10 > per_minute["general"]:
        problems.append(f"{name}: the credential rate limit must be far tighter: {per_minute}")
    common = [
        action
        for group, action in managed
        if (group.get("VendorName"), group.get("Name")) == ("AWS", "AWSManagedRulesCommonRuleSet")
    ]
    if len(common) != 1 or common[0] not in ({"Count": {}}, {"None": {}}):
        problems.append(f"{name}: AWSManagedRulesCommonRuleSet, in count or block mode")
    return problems


# -- CloudFront in front of the balancer ---------------------------------------------------------

VIEWER_ADDRESS = "x-viewer-address"
YEAR = 31_536_000
SESSION_COOKIES = {
    Settings.__dataclass_fields__["session_cookie_name"].default,
    "__Host-" + Settings.__dataclass_fields__["session_cookie_name"].default,
}
MANAGED_CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"


def _cache_key(stack: Stack, behaviour: dict[str, Any]) -> dict[str, Any]:
    policy = stack.properties(logical_id(behaviour.get("CachePolicyId")) or "")
    return policy.get("CachePolicyConfig", {})


def check_cloudfront(stack: Stack) -> list[str]:
    """With CloudFrontDomainName: one distribution on the shop's host name, HTTPS only to the
    viewer and to the balancer; HTML keyed on the URL and the session cookie alone (so
    anonymous visitors share a copy and nothing unmarked is kept); static files and images
    kept a year without cookies; the API never kept; the balancer answering CloudFront only
    (a generated origin header), keeping CloudFront's X-Forwarded-For. Without it: none."""
    distributions = stack.resources("AWS::CloudFront::Distribution")
    balancer = stack.properties("LoadBalancer")
    xff = {a["Key"]: a["Value"] for a in balancer["LoadBalancerAttributes"]}.get(
        "routing.http.xff_header_processing.mode"
    )
    if not stack.condition("UseCloudFront"):
        problems = [f"{name}: no CloudFront without its host name" for name in distributions]
        if xff != "append":
            problems.append("LoadBalancer: without CloudFront, X-Forwarded-For is appended to")
        return problems
    if len(distributions) != 1:
        return [f"expected one AWS::CloudFront::Distribution, found {sorted(distributions)}"]
    ((name, distribution),) = distributions.items()
    config = distribution["DistributionConfig"]
    problems = []
    if config.get("Aliases") != [stack.parameters["CloudFrontDomainName"]]:
        problems.append(f"{name}: its alias must be CloudFrontDomainName")
    viewer = config.get("ViewerCertificate", {})
    if viewer.get("AcmCertificateArn") != stack.parameters["CloudFrontCertificateArn"] or (
        viewer.get("SslSupportMethod") != "sni-only"
    ):
        problems.append(f"{name}: the us-east-1 certificate, SNI only")
    (origin,) = config["Origins"]
    custom = origin.get("CustomOriginConfig", {})
    if custom.get("OriginProtocolPolicy") != "https-only" or custom.get("OriginSSLProtocols") != [
        "TLSv1.2"
    ]:
        problems.append(f"{name}: the balancer must be fetched over HTTPS (TLS 1.2) only")
    headers = {h["HeaderName"]: h["HeaderValue"] for h in origin.get("OriginCustomHeaders", [])}
    secret = headers.get("X-Origin-Verify", "")
    if not secret.startswith("{{resolve:secretsmanager:"):
        problems.append(f"{name}: X-Origin-Verify must come from Secrets Manager, is {secret!r}")

    default = config["DefaultCacheBehavior"]
    behaviours = {b["PathPattern"]: b for b in config.get("CacheBehaviors", [])}
    for where, behaviour in [("default", default), *behaviours.items()]:
        if behaviour.get("ViewerProtocolPolicy") not in ("redirect-to-https", "https-only"):
            problems.append(f"{name} {where}: viewers must be on HTTPS")
        if sorted(behaviour.get("CachedMethods", [])) != ["GET", "HEAD"]:
            problems.append(f"{name} {where}: only GET and HEAD may be kept")
    pages = _cache_key(stack, default)
    key = pages.get("ParametersInCacheKeyAndForwardedToOrigin", {})
    cookies = key.get("CookiesConfig", {})
    if cookies.get("CookieBehavior") != "whitelist" or set(cookies.get("Cookies", [])) != (
        SESSION_COOKIES
    ):
        problems.append(f"{name} default: the page key's cookies must be the session's alone")
    if key.get("HeadersConfig", {}).get("HeaderBehavior") != "none":
        problems.append(f"{name} default: no header in the page key")
    if key.get("QueryStringsConfig", {}).get("QueryStringBehavior") != "all":
        problems.append(f"{name} default: the whole query string in the page key")
    if int(pages.get("MinTTL", -1)) != 0 or int(pages.get("DefaultTTL", -1)) != 0:
        problems.append(f"{name} default: kept only as the shop says (MinTTL 0, DefaultTTL 0)")
    if "POST" not in default.get("AllowedMethods", []):
        problems.append(f"{name} default: forms must reach the shop (POST allowed)")
    for path in ("/static/*", "/images/*"):
        behaviour = behaviours.get(path)
        if behaviour is None:
            problems.append(f"{name}: no behaviour for {path}")
            continue
        static = _cache_key(stack, behaviour)
        key = static.get("ParametersInCacheKeyAndForwardedToOrigin", {})
        if key.get("CookiesConfig", {}).get("CookieBehavior") != "none":
            problems.append(f"{name} {path}: no cookies")
        if int(static.get("DefaultTTL", 0)) < YEAR or int(static.get("MaxTTL", 0)) < YEAR:
            problems.append(f"{name} {path}: kept a year (immutable)")
        if key.get("QueryStringsConfig", {}).get("QueryStringBehavior") != "all":
            problems.append(f"{name} {path}: the fingerprint (?v=) must be in the key")
    api = behaviours.get("/api/*", {})
    if api.get("CachePolicyId") != MANAGED_CACHING_DISABLED:
        problems.append(f"{name} /api/*: never kept (CachingDisabled)")

    listener = stack.properties("HttpsListener")
    if [a.get("Type") for a in listener.get("DefaultActions", [])] != ["fixed-response"]:
        problems.append("HttpsListener: must refuse what does not come from CloudFront")
    rules = [
        r
        for r in stack.resources("AWS::ElasticLoadBalancingV2::ListenerRule").values()
        if logical_id(r.get("ListenerArn")) == "HttpsListener"
    ]
    verified = [
        c["HttpHeaderConfig"]
        for r in rules
        for c in r.get("Conditions", [])
        if c.get("Field") == "http-header"
    ]
    if verified != [{"HttpHeaderName": "X-Origin-Verify", "Values": [secret]}]:
        problems.append("HttpsListener: forwards only with CloudFront's X-Origin-Verify")
    if xff != "preserve":
        problems.append("LoadBalancer: must keep CloudFront's X-Forwarded-For (preserve)")
    function = stack.properties("ViewerAddress").get("FunctionCode", "")
    if f"headers['{VIEWER_ADDRESS}'] = {{value: event.viewer.ip}}" not in function:
        problems.append(f"ViewerAddress: must write {VIEWER_ADDRESS} from event.viewer.ip")
    if stack.environment(APP_TASK, APP_CONTAINER).get("SHOP_TRUSTED_PROXIES") != "1":
        problems.append("SHOP_TRUSTED_PROXIES must stay 1: the balancer adds no entry")
    return problems


def test_cloudfront_keeps_anonymous_pages_and_static_files_and_nothing_personal(stack):
    assert check_cloudfront(stack) == []


def test_cloudfront_needs_both_certificates(template):
    """A host name without the certificates makes no half a CloudFront: the template's rule
    refuses it (CloudFormation checks Rules before creating anything)."""
    (rule,) = template["Rules"].values()
    assertions = json.dumps(rule["Assertions"])
    assert "CertificateArn" in assertions and "CloudFrontCertificateArn" in assertions
    half = Stack.of(template, Image="example/shop:1", CloudFrontDomainName="shop.example.com")
    assert half.resources("AWS::CloudFront::Distribution") == {}


def _distribution(template: Template) -> dict[str, Any]:
    return _resources(template)["Distribution"]["Properties"]["DistributionConfig"]


def _all_cookies_in_the_page_key(template: Template) -> None:
    config = _resources(template)["PageCachePolicy"]["Properties"]["CachePolicyConfig"]
    config["ParametersInCacheKeyAndForwardedToOrigin"]["CookiesConfig"] = {"CookieBehavior": "all"}


def _pages_kept_by_default(template: Template) -> None:
    _resources(template)["PageCachePolicy"]["Properties"]["CachePolicyConfig"]["DefaultTTL"] = 60


def _static_with_cookies(template: Template) -> None:
    _resources(template)["StaticCachePolicy"]["Properties"]["CachePolicyConfig"][
        "ParametersInCacheKeyAndForwardedToOrigin"
    ]["CookiesConfig"] = {"CookieBehavior": "all"}


def _plain_http_viewers(template: Template) -> None:
    _distribution(template)["DefaultCacheBehavior"]["ViewerProtocolPolicy"] = "allow-all"


def _plain_http_origin(template: Template) -> None:
    origin = _distribution(template)["Origins"][0]["CustomOriginConfig"]
    origin["OriginProtocolPolicy"] = "http-only"


def _balancer_open_to_all(template: Template) -> None:
    listener = _resources(template)["HttpsListener"]["Properties"]
    listener["DefaultActions"] = [{"Type": "forward", "TargetGroupArn": {"Ref": "TargetGroup"}}]


def _posts_kept(template: Template) -> None:
    _distribution(template)["DefaultCacheBehavior"]["CachedMethods"] = ["GET", "HEAD", "OPTIONS"]


def _waf_counting_cloudfront(template: Template) -> None:
    for rule in _waf(template)["Rules"]:
        rate = rule["Statement"].get("RateBasedStatement")
        if rate:
            rate["AggregateKeyType"] = "IP"
            rate.pop("ForwardedIPConfig")


CLOUDFRONT_BREAKAGES = [
    (_all_cookies_in_the_page_key, check_cloudfront, "the session's alone"),
    (_pages_kept_by_default, check_cloudfront, "DefaultTTL 0"),
    (_static_with_cookies, check_cloudfront, "/static/*: no cookies"),
    (_plain_http_viewers, check_cloudfront, "viewers must be on HTTPS"),
    (_plain_http_origin, check_cloudfront, "over HTTPS (TLS 1.2) only"),
    (_balancer_open_to_all, check_cloudfront, "must refuse"),
    (_posts_kept, check_cloudfront, "only GET and HEAD"),
    (_waf_counting_cloudfront, check_waf, "per viewer address"),
]


@pytest.mark.parametrize(
    ("breakage", "check", "complaint"),
    CLOUDFRONT_BREAKAGES,
    ids=[b.__name__.strip("_") for b, _, _ in CLOUDFRONT_BREAKAGES],
)
def test_each_cloudfront_check_catches_a_broken_copy(template, breakage, check, complaint):
    broken = copy.deepcopy(template)
    breakage(broken)
    problems = check(Stack.of(broken, Image="example/shop:1", **CLOUDFRONT))
    assert any(complaint in problem for problem in problems), problems


def _credential_scope(where: str, scope: dict[str, Any]) -> list[str]:
    """POST, and the path (URL-decoded) starting with one of the credential prefixes."""
    parts = scope.get("AndStatement", {}).get("Statements", [])
    paths = [p for p in parts if "OrStatement" in p]
    prefixes = set()
    for statement in paths[0]["OrStatement"]["Statements"] if len(paths) == 1 else []:
        match = statement.get("ByteMatchStatement", {})
        decoded = {"Priority": 0, "Type": "URL_DECODE"} in match.get("TextTransformations", [])
        if (
            match.get("FieldToMatch") == {"UriPath": {}}
            and decoded
            and (match.get("PositionalConstraint") == "STARTS_WITH")
        ):
            prefixes.add(match.get("SearchString"))
    problems = []
    if METHOD_POST not in parts or len(parts) != 2:
        problems.append(f"{where}: the scope must be a POST (and the paths)")
    if prefixes != CREDENTIAL_PREFIXES:
        problems.append(
            f"{where}: the credential paths (URL-decoded, STARTS_WITH) must be exactly "
            f"{sorted(CREDENTIAL_PREFIXES)}, are {sorted(prefixes)}"
        )
    return problems


# -- the invariants, for every parameter set ------------------------------------------------


def test_cloudformation_accepts_no_yaml_aliases():
    assert yaml_aliases() == [], "CloudFormation refuses YAML anchors and aliases"


def test_every_tier_is_reached_only_from_the_tier_in_front_of_it(stack):
    assert check_security_group_chain(stack) == []


def test_multi_az_and_automatic_failover_are_on_everywhere(stack):
    assert check_multi_az(stack) == []


def test_storage_and_transit_are_encrypted(stack):
    assert check_encryption(stack) == []


def test_the_balancer_has_no_stickiness_and_checks_readyz(stack):
    assert check_no_stickiness(stack) == []


def test_secrets_come_from_secrets_manager_only(stack):
    assert check_secrets(stack) == []


def test_the_https_listener_sends_hsts(stack):
    assert check_hsts(stack) == []


def test_aws_waf_guards_the_balancer_with_the_edge_rate_rules(stack):
    assert check_waf(stack) == []


def test_the_common_rule_set_counts_or_blocks_as_the_parameter_says(template):
    for action, expected in (("Count", {"Count": {}}), ("Block", {"None": {}})):
        stack = Stack.of(template, WafCommonRulesAction=action)
        ((_, acl),) = stack.resources("AWS::WAFv2::WebACL").items()
        (common,) = [r for r in acl["Rules"] if "ManagedRuleGroupStatement" in r["Statement"]]
        assert common["OverrideAction"] == expected
        # In Block mode too, the 8 KB body rule only counts: uploads and forms up to the
        # shop's own limits must reach the app, which refuses larger bodies itself.
        overrides = common["Statement"]["ManagedRuleGroupStatement"]["RuleActionOverrides"]
        assert {"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}} in overrides


def test_the_deploy_guide_states_the_edge_figures_the_template_applies(template):
    guide = " ".join((TEMPLATE.parents[2] / "docs" / "deploy.md").read_text().split())
    parameters = template["Parameters"]
    for name in ("WafRequestsPerMinute", "WafCredentialPostsPerMinute"):
        assert re.search(rf"`{name}` \({parameters[name]['Default']}\b", guide), name
    common = parameters["WafCommonRulesAction"]["Default"]
    assert f"in `{common}` mode by default (`WafCommonRulesAction`)" in guide
    assert f"`Strict-Transport-Security: {HSTS}`" in guide
    for prefix in CREDENTIAL_PREFIXES:
        assert f"`{prefix}`" in guide, prefix


def _guide() -> str:
    return " ".join((TEMPLATE.parents[2] / "docs" / "deploy.md").read_text().split())


def test_the_deploy_guide_states_the_budget_the_template_keeps(template):
    """docs/deploy.md's inequality, its table of what a task holds and its table of what each
    instance class allows are the template's (and the test's) figures."""
    guide = _guide()
    assert "`MaxTasks x 2 (deploy) x workers x threads <= 0.8 x max_connections`" in guide
    cpus = template["Parameters"]["TaskCpu"]["AllowedValues"]
    for cpu in cpus:
        stack = Stack.of(template, TaskCpu=cpu)
        workers, threads = connections_per_task(stack)
        row = (
            f"| {cpu} | {int(cpu) / 1024:g} | {workers} | {threads} | {workers * threads} | "
            f"{2 * workers * threads} | {request_target(stack)} |"
        )
        assert row in guide, row
    for instance_class in template["Parameters"]["DatabaseInstanceClass"]["AllowedValues"]:
        limit = rds_max_connections(instance_class)
        tasks = [
            max_tasks(Stack.of(template, DatabaseInstanceClass=instance_class, TaskCpu=cpu))
            for cpu in cpus
        ]
        row = (
            f"| `{instance_class}` | {RDS_MEMORY_GIB[instance_class]} GiB | {limit} | "
            f"{int(BUDGET_SHARE * limit)} | {' | '.join(map(str, tasks))} |"
        )
        assert row in guide, row


def test_the_deploy_guide_derives_the_target_and_names_every_alarm(template):
    guide = _guide()
    measured = template["Mappings"]["TaskShape"]["Measured"]
    per_vcpu, percent = measured["RequestsPerSecondPerVcpu"], measured["TargetPercent"]
    assert f"`{per_vcpu} req/s × vCPUs × {percent / 100:g} × 60 s`" in guide
    assert f"taken as **{per_vcpu}**" in guide
    default = Stack.of(template)
    assert f"which is {request_target(default)} requests per minute for a 1-vCPU task" in guide
    for name in ALARMS:
        assert f"| `{name}` |" in guide, name
    assert "## Scaling and alarms" in guide and "## The connection budget on AWS" in guide


def test_replica_urls_name_exactly_the_replicas_created(template):
    for count in range(4):
        stack = Stack.of(template, ReplicaCount=str(count))
        created = sorted(n for n in stack.resources("AWS::RDS::DBInstance") if n != "Database")
        raw = stack.environment(APP_TASK, APP_CONTAINER).get("SHOP_REPLICA_URLS", "")
        urls = Settings.from_env({"SHOP_REPLICA_URLS": raw}).replica_urls
        hosts = [logical_id(urlsplit(url).netloc.split("@")[1].split(":")[0]) for url in urls]
        assert hosts == created == [f"Replica{i}" for i in range(1, count + 1)], (count, raw)


def test_replica_count_is_bounded_to_what_the_template_defines(template):
    allowed = template["Parameters"]["ReplicaCount"]["AllowedValues"]
    assert [int(v) for v in allowed] == [0, 1, 2, 3]
    assert template["Parameters"]["ReplicaCount"]["Default"] in allowed


def test_cache_node_count_always_leaves_a_replica_to_fail_over_to(template):
    assert min(int(v) for v in template["Parameters"]["CacheNodeCount"]["AllowedValues"]) >= 2
    assert int(template["Parameters"]["MinTasks"]["MinValue"]) >= 2


def test_subnets_route_as_their_tier_needs(stack):
    """Balancer subnets reach the internet gateway, app subnets the NAT gateway of their own
    AZ, and data subnets nothing outside the VPC."""
    routes: dict[str, list[dict]] = {}
    for props in stack.resources("AWS::EC2::Route").values():
        routes.setdefault(logical_id(props["RouteTableId"]), []).append(props)
    tables = {
        logical_id(props["SubnetId"]): logical_id(props["RouteTableId"])
        for props in stack.resources("AWS::EC2::SubnetRouteTableAssociation").values()
    }
    for tier, subnets in tiers(stack).items():
        for subnet in (logical_id(ref) for ref in subnets):
            defaults = [
                r for r in routes.get(tables.get(subnet), []) if "DestinationCidrBlock" in r
            ]
            targets = [logical_id(r.get("GatewayId") or r.get("NatGatewayId")) for r in defaults]
            if tier == "balancer":
                assert targets == ["InternetGateway"], (subnet, targets)
            elif tier == "app":
                (nat,) = targets
                nat_subnet = logical_id(stack.properties(nat)["SubnetId"])
                assert subnet_azs(stack, [f"<{nat_subnet}>"]) == subnet_azs(stack, [f"<{subnet}>"])
            else:
                assert targets == [], (subnet, targets)


def test_the_migration_task_runs_with_the_app_s_settings_and_secrets(stack):
    """The same settings, but for the one URL: the primary itself, not RDS Proxy; and without
    the metrics port, which only gunicorn's master serves (the migration runs flask, and has no
    collector to scrape it: check_metrics)."""
    app = stack.containers(APP_TASK)[APP_CONTAINER]
    migrate = stack.containers(MIGRATE_TASK)[MIGRATE_CONTAINER]
    app_env = stack.environment(APP_TASK, APP_CONTAINER)
    migrate_env = stack.environment(MIGRATE_TASK, MIGRATE_CONTAINER)
    served = [i["Name"] for i in app["Environment"] if i["Name"] != "SHOP_METRICS_PORT"]
    assert [i["Name"] for i in migrate["Environment"]] == served
    app_env.pop("SHOP_METRICS_PORT", None)
    direct = migrate_env.pop("SHOP_DATABASE_URL")
    proxied = app_env.pop("SHOP_DATABASE_URL")
    assert migrate_env == app_env
    assert direct == proxied.replace(
        "<DatabaseProxy.Endpoint>:5432", "<Database.Endpoint.Address>:<Database.Endpoint.Port>"
    )
    assert migrate["Secrets"] == app["Secrets"]
    assert migrate["Command"] == ["flask", "--app", "shop", "db", "upgrade"]
    assert migrate["Image"] == app["Image"]  # MigrationImage empty: the same image


def test_https_is_served_and_http_redirects_when_a_certificate_is_given(template):
    stack = Stack.of(template, CertificateArn=CERTIFICATE)
    listeners = {
        p["Port"]: p for p in stack.resources("AWS::ElasticLoadBalancingV2::Listener").values()
    }
    assert listeners[443]["Protocol"] == "HTTPS"
    assert listeners[80]["DefaultActions"][0]["Type"] == "redirect"
    assert stack.environment(APP_TASK, APP_CONTAINER)["SHOP_SESSION_COOKIE_SECURE"] == "1"
    plain = Stack.of(template)
    listeners = [
        p["Port"] for p in plain.resources("AWS::ElasticLoadBalancingV2::Listener").values()
    ]
    assert listeners == [80]
    assert plain.environment(APP_TASK, APP_CONTAINER)["SHOP_SESSION_COOKIE_SECURE"] == "0"


# -- product images: a private, TLS-only bucket, reached by the task role on its prefix ---------

IMAGE_ACTIONS = {"s3:PutObject", "s3:GetObject"}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def task_role_statements(stack: Stack) -> list[dict[str, Any]]:
    """Every statement of the role the shop's tasks run with (none without a role)."""
    role = logical_id(stack.properties(APP_TASK).get("TaskRoleArn"))
    return _statements(stack.properties(role)) if role else []


def _prometheus_only(statement: dict[str, Any]) -> bool:
    """A statement on Amazon Managed Service for Prometheus alone (aps:*), which check_metrics
    judges; every other statement of the task role is check_images'."""
    actions = _as_list(statement.get("Action"))
    return bool(actions) and all(str(action).startswith("aps:") for action in actions)


def check_images(stack: Stack) -> list[str]:
    """With ImageStorage=s3: one bucket, all public access blocked, encrypted; its policy
    denies every request without TLS; the task role (the tasks' only AWS permissions) may put
    and get objects under the images' prefix and list that prefix, and nothing else but the
    metrics' remote write (check_metrics); the tasks are told the bucket and that prefix. With
    ImageStorage=database: no bucket, no S3 grant, and no task role unless metrics need one."""
    problems = []
    env = stack.environment(APP_TASK, APP_CONTAINER)
    buckets = stack.resources("AWS::S3::Bucket")
    roles = {t: stack.properties(t).get("TaskRoleArn") for t in (APP_TASK, MIGRATE_TASK)}
    statements = [s for s in task_role_statements(stack) if not _prometheus_only(s)]
    if env.get("SHOP_IMAGE_STORAGE") != "s3":
        if buckets or statements or roles[MIGRATE_TASK]:
            problems.append("images in the database: no bucket, and no S3 grant in a task role")
        if roles[APP_TASK] and not task_role_statements(stack):
            problems.append(f"{APP_TASK}: a task role with nothing to grant")
        return problems
    if len(buckets) != 1:
        return problems + [f"one image bucket expected, found {sorted(buckets)}"]
    ((bucket, props),) = buckets.items()
    block = props.get("PublicAccessBlockConfiguration", {})
    for flag in (
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ):
        if not is_true(block.get(flag)):
            problems.append(f"{bucket}: public access must be blocked ({flag})")
    rules = props.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
    if not any(r.get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules):
        problems.append(f"{bucket}: encryption at rest must be configured")
    arn, objects = f"<{bucket}.Arn>", f"<{bucket}.Arn>/*"
    tls_only = False
    for policy in stack.resources("AWS::S3::BucketPolicy").values():
        if logical_id(policy.get("Bucket")) != bucket:
            continue
        for statement in policy["PolicyDocument"]["Statement"]:
            insecure = statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")
            if (
                statement.get("Effect") == "Deny"
                and statement.get("Principal") == "*"
                and str(insecure).lower() == "false"
                and "s3:*" in _as_list(statement.get("Action"))
                and {arn, objects} <= set(_as_list(statement.get("Resource")))
            ):
                tls_only = True
    if not tls_only:
        problems.append(f"{bucket}: its policy must deny s3:* without TLS (aws:SecureTransport)")
    prefix = env.get("SHOP_IMAGE_S3_PREFIX", "")
    if logical_id(env.get("SHOP_IMAGE_S3_BUCKET")) != bucket or not prefix.endswith("/"):
        problems.append(f"the tasks must be told the bucket {bucket} and a prefix ending in /")
    for task, role_arn in roles.items():
        if logical_id(role_arn) is None:
            problems.append(f"{task}: must run with the task role (TaskRoleArn)")
    role = logical_id(roles[APP_TASK])
    for statement in statements:
        actions = set(_as_list(statement.get("Action")))
        resources = set(_as_list(statement.get("Resource")))
        if statement.get("Effect") != "Allow":
            continue
        if actions <= IMAGE_ACTIONS and resources == {f"{arn}/{prefix}*"}:
            continue
        listed = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        if actions == {"s3:ListBucket"} and resources == {arn} and listed == f"{prefix}*":
            continue
        problems.append(
            f"{role}: {sorted(actions)} on {sorted(resources)} is beyond the images' prefix "
            f"({arn}/{prefix}*: {sorted(IMAGE_ACTIONS)}, and s3:ListBucket of that prefix)"
        )
    if not any(set(_as_list(s.get("Action"))) >= IMAGE_ACTIONS for s in statements):
        problems.append(f"{role}: the task role must allow {sorted(IMAGE_ACTIONS)} on the images")
    execution = stack.properties("ExecutionRole")
    if "s3:" in json.dumps(execution):
        problems.append("ExecutionRole: S3 belongs to the task role, not ECS's own")
    return problems


def test_product_images_live_in_a_private_tls_only_bucket_the_task_role_alone_reaches(stack):
    assert not (problems := check_images(stack)), problems


# -- metrics: a collector in each task, into the stack's Amazon Managed Service for Prometheus ---

COLLECTOR = "metrics-collector"
COLLECTOR_IMAGE = re.compile(
    r"^public\.ecr\.aws/aws-observability/aws-otel-collector:v\d+\.\d+\.\d+$"
)
# Often enough for a rate() over a minute or two; rarer is cheaper (the bill is per sample).
SCRAPE_SECONDS = (15, 30)
# Fargate's task sizes: the least and the most memory (MiB) each TaskCpu allows (AWS's table).
FARGATE_MEMORY_MIB = {
    "512": (1024, 4096), "1024": (2048, 8192), "2048": (4096, 16384), "4096": (8192, 30720),
}  # fmt: skip


def collector_config(stack: Stack) -> dict[str, Any]:
    """The collector's configuration, its AOT_CONFIG_CONTENT read as the collector reads it."""
    text = stack.environment(APP_TASK, COLLECTOR).get("AOT_CONFIG_CONTENT", "")
    config = yaml.safe_load(text)
    return config if isinstance(config, dict) else {}


def _seconds(duration: Any) -> float:
    """A Prometheus duration (``500ms``, ``30s``, ``1m``) in seconds; NaN if it is none."""
    match = re.fullmatch(r"(\d+)(ms|s|m)", str(duration))
    if match is None:
        return float("nan")
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


def check_metrics(stack: Stack) -> list[str]:
    """With Metrics=prometheus: one workspace, named after the stack; the shop told
    SHOP_METRICS_PORT, a port of its own; beside it a collector (ADOT, a pinned version) that
    is not essential, is restarted when it exits, holds no secret, maps no port and logs under
    a stream prefix of its own; it scrapes that port on the task's localhost every 15-30 s,
    labels every series with its task (ECS's resource detector, turned into labels) and
    remote-writes to this stack's workspace, signed with SigV4 for aps in the stack's region;
    in Amazon Managed Service for Prometheus the task role may remote-write to that workspace
    and nothing else. The migration task has neither collector nor metrics port. With
    Metrics=none: none of it. (No security group opens the metrics port:
    check_security_group_chain admits the app port alone, from the balancer alone.)"""
    problems = []
    workspaces = stack.resources("AWS::APS::Workspace")
    containers = stack.containers(APP_TASK)
    env = stack.environment(APP_TASK, APP_CONTAINER)
    grants = [s for s in task_role_statements(stack) if _prometheus_only(s)]
    migration = stack.containers(MIGRATE_TASK)
    if set(migration) != {MIGRATE_CONTAINER} or "SHOP_METRICS_PORT" in (
        stack.environment(MIGRATE_TASK, MIGRATE_CONTAINER)
    ):
        problems.append(
            f"{MIGRATE_TASK}: no collector and no metrics port (it runs no gunicorn), "
            f"has {sorted(migration)}"
        )
    if stack.parameters["Metrics"] != "prometheus":
        sidecars = sorted(set(containers) - {APP_CONTAINER})
        if workspaces or sidecars or "SHOP_METRICS_PORT" in env or grants:
            problems.append(
                f"Metrics=none: no workspace {sorted(workspaces)}, no collector {sidecars}, "
                f"no SHOP_METRICS_PORT ({env.get('SHOP_METRICS_PORT')}), no aps grant {grants}"
            )
        return problems
    if len(workspaces) != 1:
        return problems + [f"expected one AWS::APS::Workspace, found {sorted(workspaces)}"]
    ((workspace, props),) = workspaces.items()
    if "<AWS::StackName>" not in str(props.get("Alias", "")):
        problems.append(f"{workspace}: its alias must name the stack, is {props.get('Alias')!r}")
    port = env.get("SHOP_METRICS_PORT", "")
    if not port.isdigit() or int(port) == app_port(stack):
        problems.append(f"the shop must be told SHOP_METRICS_PORT, a port of its own: {port!r}")
    found = [
        (s.get("Effect"), set(_as_list(s.get("Action"))), set(_as_list(s.get("Resource"))))
        for s in grants
    ]
    wanted = [("Allow", {"aps:RemoteWrite"}, {f"<{workspace}.Arn>"})]
    if found != wanted:
        problems.append(
            f"the task role may aps:RemoteWrite to <{workspace}.Arn> and nothing else in aps, "
            f"may {found}"
        )
    if set(containers) != {APP_CONTAINER, COLLECTOR}:
        return problems + [f"{APP_TASK}: expected {APP_CONTAINER} and {COLLECTOR}: {containers}"]
    problems += _collector_container(stack, containers[COLLECTOR])
    problems += _collector_pipeline(stack, port, workspace)
    return problems


def _collector_container(stack: Stack, spec: dict[str, Any]) -> list[str]:
    problems = []
    where = f"{APP_TASK}/{COLLECTOR}"
    if not COLLECTOR_IMAGE.match(str(spec.get("Image", ""))):
        problems.append(f"{where}: ADOT's image, pinned to a version, not {spec.get('Image')!r}")
    if str(spec.get("Essential")).lower() != "false":
        problems.append(f"{where}: must be essential: false (its exit must not stop the shop)")
    if not is_true(spec.get("RestartPolicy", {}).get("Enabled")):
        problems.append(f"{where}: ECS must restart it when it exits (RestartPolicy)")
    if spec.get("Secrets") or spec.get("PortMappings"):
        problems.append(f"{where}: no secrets and no port mapping")
    shop_logs = stack.containers(APP_TASK)[APP_CONTAINER]["LogConfiguration"]["Options"]
    logs = spec.get("LogConfiguration", {})
    options = logs.get("Options", {})
    if (
        logs.get("LogDriver") != "awslogs"
        or logical_id(options.get("awslogs-group")) != "LogGroup"
        or options.get("awslogs-stream-prefix") in (None, shop_logs["awslogs-stream-prefix"])
    ):
        problems.append(f"{where}: logs to LogGroup (awslogs) under a stream prefix of its own")
    return problems


def _collector_pipeline(stack: Stack, port: str, workspace: str) -> list[str]:
    where = f"{COLLECTOR}'s AOT_CONFIG_CONTENT"
    config = collector_config(stack)
    service = config.get("service", {})
    pipelines = [
        p for p in service.get("pipelines", {}).values() if "prometheus" in p.get("receivers", [])
    ]
    if len(pipelines) != 1 or pipelines[0].get("exporters") != ["prometheusremotewrite"]:
        return [f"{where}: one pipeline, prometheus to prometheusremotewrite: {pipelines}"]
    (pipeline,) = pipelines
    processors = pipeline.get("processors", [])
    problems = []
    if processors[:1] != ["memory_limiter"]:
        problems.append(
            f"{where}: memory_limiter must come first, so the limit holds: {processors}"
        )

    scrape = config["receivers"]["prometheus"].get("config", {})
    jobs = scrape.get("scrape_configs", [])
    targets = [
        target
        for job in jobs
        for static in job.get("static_configs", [])
        for target in static.get("targets", [])
    ]
    job = jobs[0] if len(jobs) == 1 else {}
    if (
        targets != [f"localhost:{port}"]
        or job.get("metrics_path", "/metrics") != "/metrics"
        or job.get("scheme", "http") != "http"
    ):
        problems.append(
            f"{where}: must scrape http://localhost:{port}/metrics (the shop's "
            f"SHOP_METRICS_PORT) and nothing else, scrapes {targets}"
        )
    defaults = scrape.get("global", {})
    interval = _seconds(job.get("scrape_interval", defaults.get("scrape_interval", "1m")))
    timeout = _seconds(job.get("scrape_timeout", defaults.get("scrape_timeout", "10s")))
    low, high = SCRAPE_SECONDS
    if not (low <= interval <= high and timeout < interval):
        problems.append(
            f"{where}: a scrape interval of {low}-{high} s and a shorter timeout, "
            f"not {interval} s and {timeout} s"
        )

    detection = config.get("processors", {}).get("resourcedetection", {})
    task_id = detection.get("ecs", {}).get("resource_attributes", {}).get("aws.ecs.task.id", {})
    exporter = config.get("exporters", {}).get("prometheusremotewrite", {})
    if (
        "resourcedetection" not in processors
        or "ecs" not in detection.get("detectors", [])
        or task_id.get("enabled", True) is not True
        or not is_true(exporter.get("resource_to_telemetry_conversion", {}).get("enabled"))
    ):
        problems.append(
            f"{where}: every series must carry its task's labels (the ecs resource detector's "
            "aws.ecs.task.id, as labels: resource_to_telemetry_conversion)"
        )

    endpoint = f"<{workspace}.PrometheusEndpoint>api/v1/remote_write"
    if exporter.get("endpoint") != endpoint:
        problems.append(f"{where}: must remote-write to {endpoint}, not {exporter.get('endpoint')}")
    sigv4 = config.get("extensions", {}).get("sigv4auth")
    if (
        exporter.get("auth", {}).get("authenticator") != "sigv4auth"
        or "sigv4auth" not in service.get("extensions", [])
        or not isinstance(sigv4, dict)
    ):
        problems.append(f"{where}: remote writes must be signed by the sigv4auth extension")
    elif sigv4.get("region") != "<AWS::Region>" or sigv4.get("service", "aps") != "aps":
        problems.append(f"{where}: sigv4auth must sign for aps in the stack's region: {sigv4}")
    return problems


def check_task_sizes(stack: Stack) -> list[str]:
    """The task's containers fit its size: their CPU units add up to TaskCpu; beside a
    collector the shop's are stated, the task's less the collector's (a container without a
    CPU value weighs least of all, 2 shares, and would lose to the collector under
    contention); the collector's hard memory limit is at most a quarter of the task's memory,
    and its memory_limiter stays below that limit."""
    cpu, memory = stack.parameters["TaskCpu"], int(stack.parameters["TaskMemory"])
    least, most = FARGATE_MEMORY_MIB[cpu]
    if not least <= memory <= most:
        return [f"TaskCpu {cpu} with TaskMemory {memory}: not a Fargate task size"]
    containers = stack.containers(APP_TASK)
    units = {name: int(spec.get("Cpu", 0)) for name, spec in containers.items()}
    problems = []
    if sum(units.values()) > int(cpu):
        problems.append(f"TaskCpu {cpu}: the containers reserve {units}, more than the task")
    collector = containers.get(COLLECTOR)
    if collector is None:
        return problems
    if not 0 < units[COLLECTOR] < units[APP_CONTAINER] == int(cpu) - units[COLLECTOR]:
        problems.append(
            f"TaskCpu {cpu}: the shop's CPU must be the task's less the collector's: {units}"
        )
    hard = int(collector.get("Memory", 0))
    if not 0 < hard <= memory // 4:
        problems.append(
            f"{COLLECTOR}: a hard memory limit of at most a quarter of the task's {memory} MiB, "
            f"is {hard}"
        )
    limiter = collector_config(stack).get("processors", {}).get("memory_limiter", {})
    if not 0 < int(limiter.get("limit_mib", 0)) < hard:
        problems.append(f"{COLLECTOR}: its memory_limiter must stay below {hard} MiB: {limiter}")
    return problems


def test_metrics_are_scraped_in_each_task_into_the_stack_s_workspace(stack):
    assert not (problems := check_metrics(stack)), problems


def test_the_containers_fit_the_task(stack):
    assert not (problems := check_task_sizes(stack)), problems


def test_the_collector_fits_every_task_size(template):
    """Every TaskCpu, with every TaskMemory Fargate pairs with it."""
    parameters = template["Parameters"]
    for cpu in parameters["TaskCpu"]["AllowedValues"]:
        least, most = FARGATE_MEMORY_MIB[cpu]
        sizes = [m for m in parameters["TaskMemory"]["AllowedValues"] if least <= int(m) <= most]
        assert sizes, f"TaskCpu {cpu}: no allowed TaskMemory pairs with it"
        for memory in sizes:
            stack = Stack.of(template, TaskCpu=cpu, TaskMemory=memory)
            assert COLLECTOR in stack.containers(APP_TASK)
            assert not (problems := check_task_sizes(stack)), problems


def test_metrics_are_on_by_default(template):
    assert template["Parameters"]["Metrics"]["Default"] == "prometheus"


# USD per 10 million samples ingested, the first tier (docs/deploy.md says where it is from).
SAMPLE_PRICE = 0.90


def test_the_deploy_guide_states_the_metrics_figures_the_template_applies(template):
    """docs/deploy.md's "Metrics on AWS" names the template's port, image, interval and sizes,
    and its samples and price per task-month follow from its series estimate and the
    interval: a change to either is a change to the guide."""
    guide = _guide()
    figures = template["Mappings"]["Metrics"]["Prometheus"]
    interval = _seconds(figures["ScrapeInterval"])
    assert f"`SHOP_METRICS_PORT={figures['Port']}`" in guide
    assert f"`{figures['CollectorImage']}`" in guide
    assert f"`http://localhost:{figures['Port']}/metrics` every {interval:g} s" in guide
    assert (
        f"{figures['CollectorCpu']} CPU units and a hard limit of "
        f"{figures['CollectorMemory']} MiB of memory"
    ) in guide
    assert f"refusing data above {figures['CollectorMemoryLimit']} MiB" in guide
    shares = [template["Mappings"]["TaskShape"][c]["ShopCpu"] for c in FARGATE_MEMORY_MIB]
    assert f"(`TaskShape/ShopCpu`: {', '.join(map(str, shares))})" in guide
    (series,) = re.findall(r"taken as \*\*([\d,]+) series\*\*", guide)
    scrapes = 30 * 24 * 3600 / interval
    samples = int(series.replace(",", "")) * scrapes
    assert f"scrape per {interval:g} s is {scrapes:,.0f} a month (30 days)" in guide
    assert f"= {samples / 1e6:.0f} million samples per task-month" in guide
    assert f"USD {SAMPLE_PRICE:.2f} per 10 million samples" in guide
    assert f"about USD {samples / 1e7 * SAMPLE_PRICE:.1f} per task-month" in guide
    assert "## Metrics on AWS" in guide and "`Metrics=none`" in guide


# -- Redis: cluster mode enabled, at least two shards, non-burstable nodes ----------------------

BURSTABLE = re.compile(r"^(cache|db)\.t\d")


def _host_port(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2]


def check_redis_cluster(stack: Stack) -> list[str]:
    """Cluster mode (CacheClusterMode=enabled): at least two shards of a primary and at least
    one replica, the cluster's parameter group, the configuration endpoint in SHOP_REDIS_URL and
    SHOP_REDIS_CLUSTER=1 so the shop builds a cluster client. Otherwise one replication group
    behind its primary endpoint and SHOP_REDIS_CLUSTER=0. Either way no burstable node type."""
    problems = []
    name, group = the_one(stack, "AWS::ElastiCache::ReplicationGroup")
    env = stack.environment(APP_TASK, APP_CONTAINER)
    parameters = stack.template["Parameters"]
    allowed = [str(t) for t in parameters["CacheNodeType"].get("AllowedValues", [])]
    if not allowed or any(BURSTABLE.match(t) for t in allowed):
        problems.append(f"CacheNodeType: non-burstable node types only, allowed are {allowed}")
    if BURSTABLE.match(str(group.get("CacheNodeType"))):
        problems.append(f"{name}: CacheNodeType {group.get('CacheNodeType')} is burstable")
    address = _host_port(env.get("SHOP_REDIS_URL", ""))
    flag = env.get("SHOP_REDIS_CLUSTER")
    if stack.parameters["CacheClusterMode"] == "enabled":
        if group.get("ClusterMode") != "enabled" or "NumCacheClusters" in group:
            problems.append(f"{name}: ClusterMode must be enabled, with node groups")
        if int(group.get("NumNodeGroups", 0)) < 2:
            problems.append(f"{name}: cluster mode needs NumNodeGroups >= 2 (shards)")
        if int(group.get("ReplicasPerNodeGroup", 0)) < 1:
            problems.append(f"{name}: cluster mode needs ReplicasPerNodeGroup >= 1")
        if not str(group.get("CacheParameterGroupName", "")).endswith(".cluster.on"):
            problems.append(f"{name}: cluster mode needs a cluster-enabled parameter group")
        if address != f"<{name}.ConfigurationEndPoint.Address>:<{name}.ConfigurationEndPoint.Port>":
            problems.append(f"SHOP_REDIS_URL must name the configuration endpoint, is {address}")
        if flag != "1":
            problems.append(f"SHOP_REDIS_CLUSTER must be 1 in cluster mode, is {flag!r}")
    else:
        if group.get("ClusterMode", "disabled") != "disabled" or "NumNodeGroups" in group:
            problems.append(f"{name}: with CacheClusterMode=disabled, one node group")
        if address != f"<{name}.PrimaryEndPoint.Address>:<{name}.PrimaryEndPoint.Port>":
            problems.append(f"SHOP_REDIS_URL must name the primary endpoint, is {address}")
        if flag != "0":
            problems.append(f"SHOP_REDIS_CLUSTER must be 0 without cluster mode, is {flag!r}")
    for parameter, least in (("CacheShards", 2), ("CacheReplicasPerShard", 1)):
        values = [int(v) for v in parameters[parameter]["AllowedValues"]]
        if min(values) < least:
            problems.append(f"{parameter} allows {min(values)}, fewer than {least}")
    return problems


def test_redis_runs_in_cluster_mode_on_non_burstable_nodes(stack):
    assert check_redis_cluster(stack) == []


def test_cluster_mode_is_the_default(template):
    assert template["Parameters"]["CacheClusterMode"]["Default"] == "enabled"


# -- RDS Proxy in front of the primary ---------------------------------------------------------

# The share of max_connections the connection budget spends (docs/deploy.md).
BUDGET_SHARE = 0.8


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]


def check_database_proxy(stack: Stack) -> list[str]:
    """One RDS Proxy (PostgreSQL, TLS required) signs in to the primary with the database's
    secret, which its role alone may read, and may open at most the budget's share of
    max_connections. The app's primary URL names the proxy; the migration's names the primary
    itself; the replicas are reached directly (RDS Proxy reads only from Aurora readers)."""
    problems = []
    proxies = stack.resources("AWS::RDS::DBProxy")
    if len(proxies) != 1:
        return [f"expected one AWS::RDS::DBProxy, found {sorted(proxies)}"]
    ((name, proxy),) = proxies.items()
    if proxy.get("EngineFamily") != "POSTGRESQL" or not is_true(proxy.get("RequireTLS")):
        problems.append(f"{name}: a POSTGRESQL proxy with RequireTLS")
    auth = proxy.get("Auth", [])
    if [(a.get("AuthScheme"), logical_id(a.get("SecretArn"))) for a in auth] != [
        ("SECRETS", "DatabaseSecret")
    ]:
        problems.append(f"{name}: must sign in with DatabaseSecret (Secrets Manager), is {auth}")
    role = logical_id(proxy.get("RoleArn"))
    grants = [
        (s.get("Action"), logical_id(s.get("Resource")))
        for s in _statements(stack.properties(role) if role else {})
    ]
    if grants != [("secretsmanager:GetSecretValue", "DatabaseSecret")]:
        problems.append(f"{name}: its role may read DatabaseSecret and nothing else: {grants}")
    targets = [
        t
        for t in stack.resources("AWS::RDS::DBProxyTargetGroup").values()
        if logical_id(t.get("DBProxyName")) == name
    ]
    if [t.get("DBInstanceIdentifiers") for t in targets] != [["<Database>"]]:
        problems.append(f"{name}: its one target group must hold the primary, Database")
    for target in targets:
        pool = target.get("ConnectionPoolConfigurationInfo", {})
        if int(pool.get("MaxConnectionsPercent", 100)) > BUDGET_SHARE * 100:
            problems.append(
                f"{name}: MaxConnectionsPercent {pool.get('MaxConnectionsPercent', 100)} is "
                f"beyond the connection budget's {BUDGET_SHARE:.0%} of max_connections"
            )
    app = stack.environment(APP_TASK, APP_CONTAINER).get("SHOP_DATABASE_URL", "")
    if _host_port(app) != f"<{name}.Endpoint>:5432":
        problems.append(f"the app's SHOP_DATABASE_URL must go through {name}: {app}")
    if "target_session_attrs=read-write" not in app:
        problems.append("the app's SHOP_DATABASE_URL must ask for a read-write server")
    migrate = stack.environment(MIGRATE_TASK, MIGRATE_CONTAINER).get("SHOP_DATABASE_URL", "")
    if _host_port(migrate) != "<Database.Endpoint.Address>:<Database.Endpoint.Port>":
        problems.append(f"the migration must reach the primary directly: {migrate}")
    return problems


def test_the_primary_is_reached_through_rds_proxy_and_migrations_directly(stack):
    assert check_database_proxy(stack) == []


# -- the connection budget -----------------------------------------------------------------------


def connections_per_task(stack: Stack) -> tuple[int, int]:
    """gunicorn's workers and threads as the task sets them (gunicorn.conf.py reads these)."""
    env = stack.environment(APP_TASK, APP_CONTAINER)
    return int(env["SHOP_WORKERS"]), int(env["SHOP_THREADS"])


def max_tasks(stack: Stack) -> int:
    _, target = the_one(stack, "AWS::ApplicationAutoScaling::ScalableTarget")
    return int(target["MaxCapacity"])


def check_connection_budget(stack: Stack) -> list[str]:
    """MaxTasks x 2 (deploy) x workers x threads <= 0.8 x max_connections, for the instance
    class of the primary (through the proxy, which may open that much) and of every replica
    (the tasks' own pools); MaxTasks the most the budget allows, not a number of its own."""
    problems = []
    instance_class = stack.parameters["DatabaseInstanceClass"]
    if instance_class not in RDS_MEMORY_GIB:
        return [f"{instance_class}: no memory figure in tests/support/aws_template.py"]
    limit = rds_max_connections(instance_class)
    env = stack.environment(APP_TASK, APP_CONTAINER)
    if not {"SHOP_WORKERS", "SHOP_THREADS"} <= set(env):
        return ["the task must set SHOP_WORKERS and SHOP_THREADS (the budget counts them)"]
    workers, threads = connections_per_task(stack)
    _, service = the_one(stack, "AWS::ECS::Service")
    deploy = int(service["DeploymentConfiguration"]["MaximumPercent"]) / 100
    tasks = max_tasks(stack)
    used = tasks * deploy * workers * threads
    where = f"{instance_class}, TaskCpu {stack.parameters['TaskCpu']}"
    if used > BUDGET_SHARE * limit:
        problems.append(
            f"{where}: {tasks} tasks x {deploy:g} (deploy) x {workers} workers x {threads} "
            f"threads = {used:g} connections, over the budget {BUDGET_SHARE} x {limit}"
        )
    allowed = int(BUDGET_SHARE * limit // (deploy * workers * threads))
    if tasks != allowed:
        problems.append(f"{where}: MaxTasks is {tasks}, the budget allows {allowed}")
    row = stack.template["Mappings"]["ConnectionBudget"].get(instance_class, {})
    if (row.get("MaxConnections"), row.get("Budget")) != (limit, int(BUDGET_SHARE * limit)):
        problems.append(f"{where}: the mapping's MaxConnections and Budget must be {limit}")
    for name, props in stack.resources("AWS::RDS::DBInstance").items():
        if props.get("DBInstanceClass") != instance_class:
            problems.append(f"{name}: every instance is DatabaseInstanceClass (one budget)")
    return problems


def test_the_connection_budget_holds(stack):
    assert check_connection_budget(stack) == []


def test_the_connection_budget_holds_for_every_instance_class_and_task_size(template):
    parameters = template["Parameters"]
    least = []
    for instance_class in parameters["DatabaseInstanceClass"]["AllowedValues"]:
        for cpu in parameters["TaskCpu"]["AllowedValues"]:
            stack = Stack.of(template, DatabaseInstanceClass=instance_class, TaskCpu=cpu)
            assert check_connection_budget(stack) == [], (instance_class, cpu)
            least.append(max_tasks(stack))
    # Every allowed MinTasks fits under every MaxTasks: no allowed parameter set is refused.
    assert int(parameters["MinTasks"]["MaxValue"]) <= min(least)


def test_the_budget_counts_the_variables_gunicorn_reads():
    conf = (TEMPLATE.parents[2] / "gunicorn.conf.py").read_text()
    assert re.search(r'^workers = env_int\("SHOP_WORKERS"', conf, re.MULTILINE)
    assert re.search(r'^threads = env_int\("SHOP_THREADS"', conf, re.MULTILINE)


# -- autoscaling that fits the measured capacity -------------------------------------------------

BENCHMARKS = TEMPLATE.parents[2] / "BENCHMARKS.md"


def benchmarked_requests_per_vcpu() -> float:
    """The mix through the balancer at its closed-loop peak, per vCPU of the machine it ran on
    (PostgreSQL, Redis, HAProxy and wrk shared those vCPUs: a floor for a task's)."""
    text = BENCHMARKS.read_text()
    (peak,) = re.findall(r"^Peak (\d+) req/s \(closed loop", text, re.MULTILINE)
    (cores,) = re.findall(r"^- cores: (\d+)$", text, re.MULTILINE)
    return int(peak) / int(cores)


def request_target(stack: Stack) -> float:
    """RequestsPerSecondPerVcpu x vCPUs x TargetPercent / 100 x 60 s, from Measured."""
    measured = stack.template["Mappings"]["TaskShape"]["Measured"]
    vcpus = int(stack.parameters["TaskCpu"]) / 1024
    per_second = measured["RequestsPerSecondPerVcpu"] * vcpus * measured["TargetPercent"] / 100
    return round(per_second * 60)


def check_autoscaling(stack: Stack) -> list[str]:
    """Target tracking on the balancer's requests per task at the derived target (and on CPU),
    new tasks eased in by slow start, failed deployments rolled back, Container Insights on."""
    problems = []
    target_id, target = the_one(stack, "AWS::ApplicationAutoScaling::ScalableTarget")
    if target.get("ResourceId") != "service/<Cluster>/<Service.Name>":
        problems.append(f"{target_id} must scale the Service, scales {target.get('ResourceId')}")
    kinds = {}
    for name, policy in stack.resources("AWS::ApplicationAutoScaling::ScalingPolicy").items():
        config = policy.get("TargetTrackingScalingPolicyConfiguration", {})
        kind = config.get("PredefinedMetricSpecification", {}).get("PredefinedMetricType")
        kinds[kind] = (name, config)
    if "ECSServiceAverageCPUUtilization" not in kinds:
        problems.append("a target tracking policy on the service's CPU is missing")
    if "ALBRequestCountPerTarget" not in kinds:
        return problems + ["a target tracking policy on ALBRequestCountPerTarget is missing"]
    name, config = kinds["ALBRequestCountPerTarget"]
    label = config["PredefinedMetricSpecification"].get("ResourceLabel")
    if label != "<LoadBalancer.LoadBalancerFullName>/<TargetGroup.TargetGroupFullName>":
        problems.append(f"{name}: counts {label}, not the shop's target group")
    expected = request_target(stack)
    if float(config.get("TargetValue", 0)) != expected:
        problems.append(
            f"{name}: TargetValue {config.get('TargetValue')} is not the measured capacity's "
            f"(RequestsPerSecondPerVcpu x vCPUs x TargetPercent x 60 s = {expected})"
        )
    _, group = the_one(stack, "AWS::ElasticLoadBalancingV2::TargetGroup")
    attributes = {a["Key"]: str(a["Value"]) for a in group.get("TargetGroupAttributes", [])}
    if not 30 <= int(attributes.get("slow_start.duration_seconds", "0")) <= 900:
        problems.append("the target group needs slow start (slow_start.duration_seconds >= 30)")
    _, service = the_one(stack, "AWS::ECS::Service")
    deployment = service.get("DeploymentConfiguration", {})
    breaker = deployment.get("DeploymentCircuitBreaker", {})
    if not (is_true(breaker.get("Enable")) and is_true(breaker.get("Rollback"))):
        problems.append("Service: the deployment circuit breaker must be on, with rollback")
    alarms = deployment.get("Alarms", {})
    wanted = is_true(stack.parameters["DeploymentAlarmRollback"])
    watched = "<ErrorRateAlarm>" in alarms.get("AlarmNames", [])
    if not watched or {is_true(alarms.get("Enable")), is_true(alarms.get("Rollback"))} != {wanted}:
        problems.append(
            "Service: a deployment during which ErrorRateAlarm goes off rolls back, unless "
            "DeploymentAlarmRollback is false"
        )
    _, cluster = the_one(stack, "AWS::ECS::Cluster")
    settings = {s["Name"]: s["Value"] for s in cluster.get("ClusterSettings", [])}
    if settings.get("containerInsights") not in ("enabled", "enhanced"):
        problems.append("Cluster: Container Insights must be on")
    return problems


def test_autoscaling_fits_the_measured_capacity(stack):
    assert check_autoscaling(stack) == []


def test_the_measured_capacity_is_benchmarks_md_s(template):
    """The template's one measured figure is BENCHMARKS.md's, rounded down; a new benchmark
    that moves it by more than a tenth asks for the targets to be derived again."""
    written = template["Mappings"]["TaskShape"]["Measured"]["RequestsPerSecondPerVcpu"]
    measured = benchmarked_requests_per_vcpu()
    assert 0.9 * measured <= written <= measured, (written, measured)
    assert template["Mappings"]["TaskShape"]["Measured"]["TargetPercent"] == 60


# -- CloudWatch alarms, to one SNS topic ---------------------------------------------------------

TOPIC = "<AlarmTopic>"
LOAD_BALANCER = {"LoadBalancer": "<LoadBalancer.LoadBalancerFullName>"}
TARGET_GROUP = {**LOAD_BALANCER, "TargetGroup": "<TargetGroup.TargetGroupFullName>"}


def cache_nodes(stack: Stack) -> list[str]:
    """The Redis nodes' ids (ElastiCache's per-node metrics' CacheClusterId)."""
    p = stack.parameters
    if p["CacheClusterMode"] == "enabled":
        copies = 1 + int(p["CacheReplicasPerShard"])
        shards = int(p["CacheShards"])
        return [
            f"<Cache>-{s:04d}-{c:03d}" for s in range(1, shards + 1) for c in range(1, copies + 1)
        ]
    return [f"<Cache>-{n:03d}" for n in range(1, int(p["CacheNodeCount"]) + 1)]


def replicas(stack: Stack) -> list[str]:
    return [f"<Replica{i}>" for i in range(1, int(stack.parameters["ReplicaCount"]) + 1)]


def budget(stack: Stack) -> int:
    return int(BUDGET_SHARE * rds_max_connections(stack.parameters["DatabaseInstanceClass"]))


Dimensions = list[dict[str, str]]


@dataclass(frozen=True)
class AlarmSpec:
    """What an alarm must watch: each metric (namespace, name) on each of its dimension sets,
    compared so with this threshold, and what missing data means."""

    metrics: tuple[tuple[str, str], ...]
    dimensions: Callable[[Stack], Dimensions]
    threshold: Callable[[Stack], float]
    comparison: str
    missing: str
    statistic: str | None = None
    exists: Callable[[Stack], bool] = lambda stack: True


ALARMS = {
    "ErrorRateAlarm": AlarmSpec(
        (
            ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"),
            ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"),
            ("AWS/ApplicationELB", "RequestCount"),
        ),
        lambda stack: [LOAD_BALANCER], lambda stack: 1, "GreaterThanThreshold", "notBreaching",
    ),
    "LatencyAlarm": AlarmSpec(
        (("AWS/ApplicationELB", "TargetResponseTime"),),
        lambda stack: [TARGET_GROUP], lambda stack: 1, "GreaterThanThreshold", "notBreaching",
        statistic="p99",
    ),
    "UnhealthyHostsAlarm": AlarmSpec(
        (("AWS/ApplicationELB", "UnHealthyHostCount"),),
        lambda stack: [TARGET_GROUP], lambda stack: 1,
        "GreaterThanOrEqualToThreshold", "notBreaching", statistic="Maximum",
    ),
    "AtMaxTasksAlarm": AlarmSpec(
        (("ECS/ContainerInsights", "DesiredTaskCount"),),
        lambda stack: [{"ClusterName": "<Cluster>", "ServiceName": "<Service.Name>"}],
        max_tasks, "GreaterThanOrEqualToThreshold", "notBreaching", statistic="Maximum",
    ),
    "DatabaseConnectionsAlarm": AlarmSpec(
        (("AWS/RDS", "DatabaseConnections"),),
        lambda stack: [{"DBInstanceIdentifier": "<Database>"}],
        budget, "GreaterThanOrEqualToThreshold", "missing", statistic="Maximum",
    ),
    "ReplicaConnectionsAlarm": AlarmSpec(
        (("AWS/RDS", "DatabaseConnections"),),
        lambda stack: [{"DBInstanceIdentifier": r} for r in replicas(stack)],
        budget, "GreaterThanOrEqualToThreshold", "missing", statistic="Maximum",
        exists=lambda stack: bool(replicas(stack)),
    ),
    "ReplicaLagAlarm": AlarmSpec(
        (("AWS/RDS", "ReplicaLag"),),
        lambda stack: [{"DBInstanceIdentifier": r} for r in replicas(stack)],
        lambda stack: 30, "GreaterThanThreshold", "missing", statistic="Maximum",
        exists=lambda stack: bool(replicas(stack)),
    ),
    "CacheEngineCpuAlarm": AlarmSpec(
        (("AWS/ElastiCache", "EngineCPUUtilization"),),
        lambda stack: [{"CacheClusterId": n} for n in cache_nodes(stack)],
        lambda stack: 80, "GreaterThanThreshold", "missing",
    ),
    "CacheEvictionsAlarm": AlarmSpec(
        (("AWS/ElastiCache", "Evictions"),),
        lambda stack: [{"CacheClusterId": n} for n in cache_nodes(stack)],
        lambda stack: 0, "GreaterThanThreshold", "notBreaching", statistic="Sum",
    ),
    "CacheReplicationLagAlarm": AlarmSpec(
        (("AWS/ElastiCache", "ReplicationLag"),),
        lambda stack: [{"CacheClusterId": n} for n in cache_nodes(stack)],
        lambda stack: 1, "GreaterThanThreshold", "missing", statistic="Maximum",
    ),
}  # fmt: skip


def alarm_metrics(alarm: dict[str, Any]) -> list[tuple[str, str, dict[str, str], str | None]]:
    """(namespace, metric, dimensions, statistic) of a plain or a metric-math alarm."""
    found = []
    stats = [{**alarm, "Metric": alarm}] if "MetricName" in alarm else []
    stats += [m["MetricStat"] for m in alarm.get("Metrics", []) if "MetricStat" in m]
    for stat in stats:
        metric = stat["Metric"]
        dimensions = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
        statistic = stat.get("Stat") or stat.get("Statistic") or stat.get("ExtendedStatistic")
        found.append((metric["Namespace"], metric["MetricName"], dimensions, statistic))
    return found


def check_alarms(stack: Stack) -> list[str]:
    """Every alarm the operator needs exists, watches the right metric of the right resources,
    has its threshold and its TreatMissingData, and tells AlarmTopic when it goes off and when
    it clears; the topic mails AlarmEmail when one is given."""
    problems = []
    alarms = stack.resources("AWS::CloudWatch::Alarm")
    for name in sorted(set(alarms) - set(ALARMS)):
        problems.append(f"{name}: an alarm the invariants do not know (add it to ALARMS)")
    for name, spec in ALARMS.items():
        if not spec.exists(stack):
            if name in alarms:
                problems.append(f"{name}: nothing to watch with {stack.parameters}")
            continue
        alarm = alarms.get(name)
        if alarm is None:
            problems.append(f"{name}: the alarm is missing")
            continue
        wanted = sorted(
            (namespace, metric, tuple(sorted(dimensions.items())))
            for namespace, metric in spec.metrics
            for dimensions in spec.dimensions(stack)
        )
        metrics = alarm_metrics(alarm)
        watched = sorted((n, m, tuple(sorted(d.items()))) for n, m, d, _ in metrics)
        if watched != wanted:
            problems.append(f"{name}: watches {watched}, expected {wanted}")
        if spec.statistic and {s for *_, s in metrics} != {spec.statistic}:
            problems.append(f"{name}: statistic {[s for *_, s in metrics]}, not {spec.statistic}")
        queries = alarm.get("Metrics", [])
        returned = [q for q in queries if is_true(q.get("ReturnData", True))]
        if queries and (len(returned) != 1 or "Expression" not in returned[0]):
            problems.append(f"{name}: metric math must return one expression")
        if len(queries) > 10:
            problems.append(f"{name}: {len(queries)} queries, CloudWatch allows 10 in an alarm")
        if float(alarm.get("Threshold", "nan")) != float(spec.threshold(stack)):
            problems.append(
                f"{name}: threshold {alarm.get('Threshold')}, not {spec.threshold(stack)}"
            )
        if alarm.get("ComparisonOperator") != spec.comparison:
            problems.append(f"{name}: {alarm.get('ComparisonOperator')}, not {spec.comparison}")
        if alarm.get("TreatMissingData") != spec.missing:
            problems.append(
                f"{name}: TreatMissingData {alarm.get('TreatMissingData')!r}, not {spec.missing!r}"
            )
        if TOPIC not in alarm.get("AlarmActions", []) or TOPIC not in alarm.get("OKActions", []):
            problems.append(f"{name}: must tell AlarmTopic (AlarmActions and OKActions)")
    subscriptions = stack.resources("AWS::SNS::Subscription").values()
    mailed = [(s.get("Endpoint"), s.get("TopicArn"), s.get("Protocol")) for s in subscriptions]
    email = stack.parameters["AlarmEmail"]
    if mailed != ([(email, TOPIC, "email")] if email else []):
        problems.append(f"AlarmTopic's subscriptions are {mailed}, AlarmEmail is {email!r}")
    return problems


def test_the_alarms_watch_what_an_operator_needs_and_tell_the_topic(stack):
    assert check_alarms(stack) == []


# -- the checks bite: each broken copy is caught ----------------------------------------------


def _resources(template: Template) -> dict[str, Any]:
    return template["Resources"]


def _env(template: Template) -> list[dict[str, Any]]:
    return _resources(template)[APP_TASK]["Properties"]["ContainerDefinitions"][0]["Environment"]


def _set_env(template: Template, name: str, value: str) -> None:
    for item in _env(template):
        if isinstance(item, dict) and item.get("Name") == name:
            item["Value"] = value


def _cidr_into_database(template: Template) -> None:
    group = _resources(template)["DatabaseSecurityGroup"]["Properties"]
    rule = {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "CidrIp": "10.40.0.0/16"}
    group.setdefault("SecurityGroupIngress", []).append(rule)


def _cache_from_the_balancer(template: Template) -> None:
    rule = _resources(template)["CacheFromApp"]["Properties"]
    rule["SourceSecurityGroupId"] = {"Fn::GetAtt": ["LoadBalancerSecurityGroup", "GroupId"]}


def _app_open_on_ssh(template: Template) -> None:
    _resources(template)["AppFromLoadBalancer"]["Properties"].update(FromPort=22, ToPort=22)


def _a_fifth_group(template: Template) -> None:
    _resources(template)["DebugSecurityGroup"] = copy.deepcopy(
        _resources(template)["CacheSecurityGroup"]
    )


def _database_in_the_app_group(template: Template) -> None:
    _resources(template)["Database"]["Properties"]["VPCSecurityGroups"].append(
        {"Fn::GetAtt": ["AppSecurityGroup", "GroupId"]}
    )


def _balancer_open_on_8080(template: Template) -> None:
    group = _resources(template)["LoadBalancerSecurityGroup"]["Properties"]
    group["SecurityGroupIngress"].append(
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "CidrIp": "0.0.0.0/0"}
    )


def _single_az_database(template: Template) -> None:
    _resources(template)["Database"]["Properties"]["MultiAZ"] = False


def _no_cache_failover(template: Template) -> None:
    _resources(template)["Cache"]["Properties"]["AutomaticFailoverEnabled"] = False


def _single_az_cache(template: Template) -> None:
    _resources(template)["Cache"]["Properties"]["MultiAZEnabled"] = False


def _tasks_in_one_az(template: Template) -> None:
    config = _resources(template)["Service"]["Properties"]["NetworkConfiguration"]
    config["AwsvpcConfiguration"]["Subnets"] = [{"Ref": "AppSubnetA"}]


def _two_data_subnets_in_one_az(template: Template) -> None:
    _resources(template)["DataSubnetB"]["Properties"]["AvailabilityZone"] = {
        "Fn::Select": [0, {"Fn::GetAZs": ""}]
    }


def _unencrypted_storage(template: Template) -> None:
    _resources(template)["Database"]["Properties"]["StorageEncrypted"] = False


def _plain_redis(template: Template) -> None:
    _resources(template)["Cache"]["Properties"]["TransitEncryptionEnabled"] = False
    _set_env(template, "SHOP_REDIS_URL", "redis://cache:6379/0")


def _unencrypted_cache_at_rest(template: Template) -> None:
    _resources(template)["Cache"]["Properties"]["AtRestEncryptionEnabled"] = False


def _database_url_without_tls(template: Template) -> None:
    _set_env(template, "SHOP_DATABASE_URL", "postgresql+psycopg2://shop@db:5432/shop")


def _tls_not_forced(template: Template) -> None:
    _resources(template)["DatabaseParameters"]["Properties"]["Parameters"] = {}


def _sticky_sessions(template: Template) -> None:
    attributes = _resources(template)["TargetGroup"]["Properties"]["TargetGroupAttributes"]
    for attribute in attributes:
        if attribute["Key"] == "stickiness.enabled":
            attribute["Value"] = "true"


def _stickiness_left_to_the_default(template: Template) -> None:
    props = _resources(template)["TargetGroup"]["Properties"]
    props["TargetGroupAttributes"] = [
        a for a in props["TargetGroupAttributes"] if a["Key"] != "stickiness.enabled"
    ]


def _password_in_plain_env(template: Template) -> None:
    _env(template).append({"Name": "PGPASSWORD", "Value": "hunter2hunter2"})


def _password_in_the_url(template: Template) -> None:
    _set_env(template, "SHOP_DATABASE_URL", "postgresql://shop:pw@db/shop?sslmode=require")


def _balancer_egress_anywhere(template: Template) -> None:
    group = _resources(template)["LoadBalancerSecurityGroup"]["Properties"]
    group["SecurityGroupEgress"].append({"IpProtocol": "-1", "CidrIp": "0.0.0.0/0"})


def _waf(template: Template) -> dict[str, Any]:
    return _resources(template)["WebAcl"]["Properties"]


def _waf_rule(template: Template, name: str) -> dict[str, Any]:
    (rule,) = [r for r in _waf(template)["Rules"] if r["Name"] == name]
    return rule


def _credential_scope_parts(template: Template) -> list[dict[str, Any]]:
    rate = _waf_rule(template, "credential-posts-per-ip")["Statement"]["RateBasedStatement"]
    return rate["ScopeDownStatement"]["AndStatement"]["Statements"]


def _no_hsts(template: Template) -> None:
    del _resources(template)["HttpsListener"]["Properties"]["ListenerAttributes"]


def _short_hsts(template: Template) -> None:
    (attribute,) = _resources(template)["HttpsListener"]["Properties"]["ListenerAttributes"]
    attribute["Value"] = "max-age=300"


def _waf_not_associated(template: Template) -> None:
    del _resources(template)["WebAclAssociation"]


def _waf_for_cloudfront(template: Template) -> None:
    _waf(template)["Scope"] = "CLOUDFRONT"


def _credential_rule_on_get(template: Template) -> None:
    (method,) = [p for p in _credential_scope_parts(template) if "ByteMatchStatement" in p]
    method["ByteMatchStatement"]["SearchString"] = "GET"


def _credential_path_missing(template: Template) -> None:
    (paths,) = [p for p in _credential_scope_parts(template) if "OrStatement" in p]
    paths["OrStatement"]["Statements"].pop()


def _credential_path_raw(template: Template) -> None:
    (paths,) = [p for p in _credential_scope_parts(template) if "OrStatement" in p]
    paths["OrStatement"]["Statements"][0]["ByteMatchStatement"]["TextTransformations"] = [
        {"Priority": 0, "Type": "NONE"}
    ]


def _rate_rule_plain_403(template: Template) -> None:
    _waf_rule(template, "requests-per-ip")["Action"] = {"Block": {}}


def _no_retry_after(template: Template) -> None:
    block = _waf_rule(template, "credential-posts-per-ip")["Action"]["Block"]
    del block["CustomResponse"]["ResponseHeaders"]


def _rate_limit_written_in(template: Template) -> None:
    _waf_rule(template, "requests-per-ip")["Statement"]["RateBasedStatement"]["Limit"] = 6000


def _loose_credential_limit(template: Template) -> None:
    template["Parameters"]["WafCredentialPostsPerMinute"]["Default"] = 5000


def _waf_rule_without_metrics(template: Template) -> None:
    config = _waf_rule(template, "credential-posts-per-ip")["VisibilityConfig"]
    config["CloudWatchMetricsEnabled"] = False


def _public_bucket(template: Template) -> None:
    block = _resources(template)["ImageBucket"]["Properties"]["PublicAccessBlockConfiguration"]
    block["RestrictPublicBuckets"] = False


def _unencrypted_bucket(template: Template) -> None:
    del _resources(template)["ImageBucket"]["Properties"]["BucketEncryption"]


def _bucket_policy_without_tls(template: Template) -> None:
    statement = _resources(template)["ImageBucketPolicy"]["Properties"]["PolicyDocument"][
        "Statement"
    ][0]
    statement["Condition"] = {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}


def _task_role_statements(template: Template, policy: str = "product-images") -> list[dict]:
    """The statements of one of the task role's policies (each under its own Fn::If)."""
    (found,) = [
        item["Fn::If"][1]
        for item in _resources(template)["TaskRole"]["Properties"]["Policies"]
        if item["Fn::If"][1]["PolicyName"] == policy
    ]
    return found["PolicyDocument"]["Statement"]


def _task_role_on_every_bucket(template: Template) -> None:
    _task_role_statements(template)[0]["Resource"] = "*"


def _task_role_may_delete(template: Template) -> None:
    _task_role_statements(template)[0]["Action"].append("s3:DeleteObject")


def _task_role_on_the_whole_bucket(template: Template) -> None:
    _task_role_statements(template)[0]["Resource"] = {"Fn::Sub": "${ImageBucket.Arn}/*"}


def _no_task_role(template: Template) -> None:
    del _resources(template)[APP_TASK]["Properties"]["TaskRoleArn"]


def _no_common_rule_set(template: Template) -> None:
    _waf(template)["Rules"] = [
        r for r in _waf(template)["Rules"] if "ManagedRuleGroupStatement" not in r["Statement"]
    ]


def _mapping(template: Template, name: str) -> dict[str, Any]:
    return template["Mappings"][name]


def _burstable_cache_allowed(template: Template) -> None:
    template["Parameters"]["CacheNodeType"]["AllowedValues"].append("cache.t4g.small")


def _one_shard(template: Template) -> None:
    _resources(template)["Cache"]["Properties"]["NumNodeGroups"] = 1


def _shards_without_replicas(template: Template) -> None:
    _resources(template)["Cache"]["Properties"]["ReplicasPerNodeGroup"] = 0


def _cluster_client_not_told(template: Template) -> None:
    _set_env(template, "SHOP_REDIS_CLUSTER", "0")


def _cluster_through_a_primary_endpoint(template: Template) -> None:
    _set_env(
        template, "SHOP_REDIS_URL", {"Fn::Sub": "rediss://${Cache.PrimaryEndPoint.Address}:6379"}
    )


def _app_around_the_proxy(template: Template) -> None:
    _set_env(
        template,
        "SHOP_DATABASE_URL",
        {"Fn::Sub": "postgresql://shop@${Database.Endpoint.Address}:5432/shop?sslmode=require"},
    )


def _migrations_through_the_proxy(template: Template) -> None:
    (container,) = _resources(template)[MIGRATE_TASK]["Properties"]["ContainerDefinitions"]
    (url,) = [i for i in container["Environment"] if i.get("Name") == "SHOP_DATABASE_URL"]
    url["Value"] = {
        "Fn::Sub": "postgresql://shop@${DatabaseProxy.Endpoint}:5432/shop?sslmode=require"
    }


def _proxy_without_tls(template: Template) -> None:
    _resources(template)["DatabaseProxy"]["Properties"]["RequireTLS"] = False


def _proxy_may_take_every_connection(template: Template) -> None:
    pool = _resources(template)["DatabaseProxyTargets"]["Properties"]
    pool["ConnectionPoolConfigurationInfo"]["MaxConnectionsPercent"] = 100


def _proxy_reads_every_secret(template: Template) -> None:
    role = _resources(template)["DatabaseProxyRole"]["Properties"]
    role["Policies"][0]["PolicyDocument"]["Statement"][0]["Resource"] = "*"


def _app_straight_to_the_primary(template: Template) -> None:
    rule = copy.deepcopy(_resources(template)["DatabaseFromProxy"])
    rule["Properties"]["SourceSecurityGroupId"] = {"Fn::GetAtt": ["AppSecurityGroup", "GroupId"]}
    _resources(template)["DatabaseFromApp"] = rule


def _proxy_open_to_the_vpc(template: Template) -> None:
    rule = _resources(template)["ProxyFromApp"]["Properties"]
    del rule["SourceSecurityGroupId"]
    rule["CidrIp"] = "10.40.0.0/16"


def _replicas_behind_the_primary_s_group(template: Template) -> None:
    _resources(template)["Replica1"]["Properties"]["VPCSecurityGroups"] = [
        {"Fn::GetAtt": ["DatabaseSecurityGroup", "GroupId"]}
    ]


def _more_threads(template: Template) -> None:
    _mapping(template, "TaskShape")["1024"]["Threads"] = "8"


def _more_tasks(template: Template) -> None:
    _mapping(template, "ConnectionBudget")["db.m7g.large"]["1024"] += 1


def _fewer_tasks_than_the_budget_allows(template: Template) -> None:
    _mapping(template, "ConnectionBudget")["db.m7g.large"]["1024"] -= 5


def _deploys_at_three_times(template: Template) -> None:
    _resources(template)["Service"]["Properties"]["DeploymentConfiguration"]["MaximumPercent"] = 300


def _workers_left_to_gunicorn(template: Template) -> None:
    for container in _resources(template)[APP_TASK]["Properties"]["ContainerDefinitions"][:1]:
        container["Environment"] = [
            i for i in container["Environment"] if i.get("Name") != "SHOP_WORKERS"
        ]


def _target_guessed(template: Template) -> None:
    _mapping(template, "TaskShape")["1024"]["RequestsPerMinute"] = 3000


def _target_from_another_figure(template: Template) -> None:
    _mapping(template, "TaskShape")["Measured"]["RequestsPerSecondPerVcpu"] = 600


def _no_slow_start(template: Template) -> None:
    props = _resources(template)["TargetGroup"]["Properties"]
    props["TargetGroupAttributes"] = [
        a for a in props["TargetGroupAttributes"] if a["Key"] != "slow_start.duration_seconds"
    ]


def _no_rollback(template: Template) -> None:
    config = _resources(template)["Service"]["Properties"]["DeploymentConfiguration"]
    config["DeploymentCircuitBreaker"]["Rollback"] = False


def _no_alarm_rollback(template: Template) -> None:
    config = _resources(template)["Service"]["Properties"]["DeploymentConfiguration"]
    config["Alarms"]["Rollback"] = False


def _no_container_insights(template: Template) -> None:
    del _resources(template)["Cluster"]["Properties"]


def _alarm(template: Template, name: str) -> dict[str, Any]:
    return _resources(template)[name]["Properties"]


def _alarm_not_wired(template: Template) -> None:
    del _alarm(template, "LatencyAlarm")["AlarmActions"]


def _alarm_on_another_metric(template: Template) -> None:
    _alarm(template, "LatencyAlarm")["MetricName"] = "Latency"


def _alarm_on_the_average(template: Template) -> None:
    _alarm(template, "LatencyAlarm")["ExtendedStatistic"] = "p50"


def _alarm_on_another_balancer(template: Template) -> None:
    _alarm(template, "UnhealthyHostsAlarm")["Dimensions"].pop()


def _alarm_missing(template: Template) -> None:
    del _resources(template)["CacheEvictionsAlarm"]


def _alarm_missing_a_node(template: Template) -> None:
    _alarm(template, "CacheEngineCpuAlarm")["Metrics"].pop(0)


def _alarm_missing_data_unsaid(template: Template) -> None:
    del _alarm(template, "ReplicaLagAlarm")["TreatMissingData"]


def _connections_alarm_beyond_the_budget(template: Template) -> None:
    _alarm(template, "DatabaseConnectionsAlarm")["Threshold"] = 5000


def _alarm_unknown_to_the_checks(template: Template) -> None:
    _resources(template)["SomeAlarm"] = copy.deepcopy(_resources(template)["LatencyAlarm"])


def _mail_without_an_address(template: Template) -> None:
    del _resources(template)["AlarmEmailSubscription"]["Condition"]


BREAKAGES: list[tuple[Callable[[Template], None], Callable[[Stack], list[str]], str]] = [
    (_cidr_into_database, check_security_group_chain, "open to ['CidrIp']"),
    (_cache_from_the_balancer, check_security_group_chain, "comes from LoadBalancerSecurityGroup"),
    (_app_open_on_ssh, check_security_group_chain, "ports 22-22"),
    (_a_fifth_group, check_security_group_chain, "DebugSecurityGroup"),
    (_database_in_the_app_group, check_security_group_chain, "Database is in"),
    (_balancer_open_on_8080, check_security_group_chain, "ports 8080-8080"),
    (_balancer_egress_anywhere, check_security_group_chain, "LoadBalancerSecurityGroup egress"),
    (_single_az_database, check_multi_az, "MultiAZ must be on"),
    (_no_cache_failover, check_multi_az, "AutomaticFailoverEnabled must be on"),
    (_single_az_cache, check_multi_az, "MultiAZEnabled must be on"),
    (_tasks_in_one_az, check_multi_az, "the app tier's subnets"),
    (_two_data_subnets_in_one_az, check_multi_az, "the database tier's subnets"),
    (_unencrypted_storage, check_encryption, "StorageEncrypted must be on"),
    (_plain_redis, check_encryption, "TransitEncryptionEnabled must be on"),
    (_plain_redis, check_encryption, "SHOP_REDIS_URL must be rediss://"),
    (_unencrypted_cache_at_rest, check_encryption, "AtRestEncryptionEnabled must be on"),
    (_database_url_without_tls, check_encryption, "sslmode=''"),
    (_tls_not_forced, check_encryption, "rds.force_ssl"),
    (_sticky_sessions, check_no_stickiness, "stickiness.enabled must be stated"),
    (_stickiness_left_to_the_default, check_no_stickiness, "stickiness.enabled must be stated"),
    (_password_in_plain_env, check_secrets, "PGPASSWORD is a secret in plain env"),
    (_password_in_the_url, check_secrets, "SHOP_DATABASE_URL carries a password"),
    (_no_hsts, check_hsts, "must send HSTS"),
    (_short_hsts, check_hsts, "must send HSTS"),
    (_waf_not_associated, check_waf, "associated with the LoadBalancer"),
    (_waf_for_cloudfront, check_waf, "REGIONAL"),
    (_credential_rule_on_get, check_waf, "must be a POST"),
    (_credential_path_missing, check_waf, "credential paths"),
    (_credential_path_raw, check_waf, "credential paths"),
    (_rate_rule_plain_403, check_waf, "429"),
    (_no_retry_after, check_waf, "Retry-After"),
    (_rate_limit_written_in, check_waf, "must be a parameter"),
    (_loose_credential_limit, check_waf, "far tighter"),
    (_waf_rule_without_metrics, check_waf, "metrics"),
    (_no_common_rule_set, check_waf, "AWSManagedRulesCommonRuleSet"),
    (_public_bucket, check_images, "public access must be blocked"),
    (_unencrypted_bucket, check_images, "encryption at rest"),
    (_bucket_policy_without_tls, check_images, "without TLS"),
    (_task_role_on_every_bucket, check_images, "beyond the images' prefix"),
    (_task_role_may_delete, check_images, "beyond the images' prefix"),
    (_task_role_on_the_whole_bucket, check_images, "beyond the images' prefix"),
    (_no_task_role, check_images, "TaskRoleArn"),
    (_burstable_cache_allowed, check_redis_cluster, "non-burstable"),
    (_one_shard, check_redis_cluster, "NumNodeGroups >= 2"),
    (_shards_without_replicas, check_redis_cluster, "ReplicasPerNodeGroup >= 1"),
    (_shards_without_replicas, check_multi_az, "a replica per shard"),
    (_cluster_client_not_told, check_redis_cluster, "SHOP_REDIS_CLUSTER must be 1"),
    (_cluster_through_a_primary_endpoint, check_redis_cluster, "configuration endpoint"),
    (_app_around_the_proxy, check_database_proxy, "must go through DatabaseProxy"),
    (_migrations_through_the_proxy, check_database_proxy, "primary directly"),
    (_proxy_without_tls, check_database_proxy, "RequireTLS"),
    (_proxy_without_tls, check_encryption, "RequireTLS must be on"),
    (_proxy_may_take_every_connection, check_database_proxy, "beyond the connection budget"),
    (_proxy_reads_every_secret, check_database_proxy, "nothing else"),
    (_app_straight_to_the_primary, check_security_group_chain, "comes from AppSecurityGroup"),
    (_proxy_open_to_the_vpc, check_security_group_chain, "open to ['CidrIp']"),
    (_replicas_behind_the_primary_s_group, check_security_group_chain, "Replica1 is in"),
    (_more_threads, check_connection_budget, "over the budget"),
    (_more_tasks, check_connection_budget, "over the budget"),
    (_fewer_tasks_than_the_budget_allows, check_connection_budget, "the budget allows 27"),
    (_deploys_at_three_times, check_connection_budget, "over the budget"),
    (_workers_left_to_gunicorn, check_connection_budget, "must set SHOP_WORKERS"),
    (_target_guessed, check_autoscaling, "not the measured capacity's"),
    (_target_from_another_figure, check_autoscaling, "not the measured capacity's"),
    (_no_slow_start, check_autoscaling, "slow start"),
    (_no_rollback, check_autoscaling, "circuit breaker"),
    (_no_alarm_rollback, check_autoscaling, "ErrorRateAlarm goes off rolls back"),
    (_no_container_insights, check_autoscaling, "Container Insights"),
    (_alarm_not_wired, check_alarms, "LatencyAlarm: must tell AlarmTopic"),
    (_alarm_on_another_metric, check_alarms, "LatencyAlarm: watches"),
    (_alarm_on_the_average, check_alarms, "LatencyAlarm: statistic"),
    (_alarm_on_another_balancer, check_alarms, "UnhealthyHostsAlarm: watches"),
    (_alarm_missing, check_alarms, "CacheEvictionsAlarm: the alarm is missing"),
    (_alarm_missing_a_node, check_alarms, "CacheEngineCpuAlarm: watches"),
    (_alarm_missing_data_unsaid, check_alarms, "ReplicaLagAlarm: TreatMissingData"),
    (_connections_alarm_beyond_the_budget, check_alarms, "DatabaseConnectionsAlarm: threshold"),
    (_alarm_unknown_to_the_checks, check_alarms, "SomeAlarm: an alarm the invariants"),
    (_mail_without_an_address, check_alarms, "AlarmTopic's subscriptions"),
]


@pytest.mark.parametrize(
    ("breakage", "check", "complaint"),
    BREAKAGES,
    ids=[f"{b.__name__.strip('_')}-{c.__name__}" for b, c, _ in BREAKAGES],
)
def test_each_check_catches_a_broken_copy(template, breakage, check, complaint):
    broken = copy.deepcopy(template)
    breakage(broken)
    # With a certificate, so that the HTTPS listener (and its HSTS) exists.
    problems = check(Stack.of(broken, Image="example/shop:1", CertificateArn=CERTIFICATE))
    assert any(complaint in problem for problem in problems), problems


# -- the metrics checks bite too -----------------------------------------------------------------


def _collector(template: Template) -> dict[str, Any]:
    """The collector's container definition, inside its Fn::If."""
    (found,) = [
        item["Fn::If"][1]
        for item in _resources(template)[APP_TASK]["Properties"]["ContainerDefinitions"]
        if "Fn::If" in item
    ]
    return found


def _edit_collector_config(template: Template, old: str, new: str) -> None:
    (config,) = [
        i for i in _collector(template)["Environment"] if i["Name"] == "AOT_CONFIG_CONTENT"
    ]
    text = config["Value"]["Fn::Sub"][0]
    assert old in text, old
    config["Value"]["Fn::Sub"][0] = text.replace(old, new)


def _collector_essential(template: Template) -> None:
    _collector(template)["Essential"] = True


def _collector_on_latest(template: Template) -> None:
    image = "public.ecr.aws/aws-observability/aws-otel-collector:latest"
    _mapping(template, "Metrics")["Prometheus"]["CollectorImage"] = image


def _collector_never_restarted(template: Template) -> None:
    del _collector(template)["RestartPolicy"]


def _collector_given_the_secrets(template: Template) -> None:
    shop = _resources(template)[APP_TASK]["Properties"]["ContainerDefinitions"][0]
    _collector(template)["Secrets"] = copy.deepcopy(shop["Secrets"])


def _collector_scrapes_another_port(template: Template) -> None:
    _edit_collector_config(template, "localhost:${Port}", "localhost:9200")


def _collector_scrapes_every_5_s(template: Template) -> None:
    _mapping(template, "Metrics")["Prometheus"]["ScrapeInterval"] = "5s"


def _series_without_their_task(template: Template) -> None:
    _edit_collector_config(
        template, "resource_to_telemetry_conversion:\n      enabled: true", "timeout: 5s"
    )


def _task_id_dropped(template: Template) -> None:
    _edit_collector_config(template, "aws.ecs.task.arn: {", "aws.ecs.task.id: {")


def _collector_writes_elsewhere(template: Template) -> None:
    other = "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-other/"
    _edit_collector_config(template, "${Workspace.PrometheusEndpoint}", other)


def _unsigned_writes(template: Template) -> None:
    _edit_collector_config(template, "authenticator: sigv4auth", "authenticator: basicauth")


def _signed_for_another_region(template: Template) -> None:
    _edit_collector_config(template, "region: ${AWS::Region}", "region: us-east-1")


def _limiter_last(template: Template) -> None:
    _edit_collector_config(
        template,
        "[memory_limiter, resourcedetection, resource, batch]",
        "[resourcedetection, resource, batch, memory_limiter]",
    )


def _task_role_writes_to_every_workspace(template: Template) -> None:
    _task_role_statements(template, "metrics-remote-write")[0]["Resource"] = "*"


def _task_role_may_query(template: Template) -> None:
    statement = _task_role_statements(template, "metrics-remote-write")[0]
    statement["Action"] = ["aps:RemoteWrite", "aps:QueryMetrics"]


def _task_role_grants_everything(template: Template) -> None:
    statement = _task_role_statements(template, "metrics-remote-write")[0]
    statement["Action"] = "*"


def _collector_in_the_migration(template: Template) -> None:
    definitions = _resources(template)[MIGRATE_TASK]["Properties"]["ContainerDefinitions"]
    definitions.append(copy.deepcopy(_collector(template)))


def _shop_not_told_the_port(template: Template) -> None:
    container = _resources(template)[APP_TASK]["Properties"]["ContainerDefinitions"][0]
    container["Environment"] = [
        i for i in container["Environment"] if "SHOP_METRICS_PORT" not in json.dumps(i)
    ]


def _metrics_port_opened(template: Template) -> None:
    rule = copy.deepcopy(_resources(template)["AppFromLoadBalancer"])
    rule["Properties"].update(FromPort=9100, ToPort=9100)
    _resources(template)["AppMetricsFromLoadBalancer"] = rule


def _workspace_kept_without_metrics(template: Template) -> None:
    del _resources(template)["Workspace"]["Condition"]


def _collector_kept_without_metrics(template: Template) -> None:
    definitions = _resources(template)[APP_TASK]["Properties"]["ContainerDefinitions"]
    definitions.append(_collector(template))
    definitions.remove(next(i for i in definitions if "Fn::If" in i))


def _role_kept_without_grants(template: Template) -> None:
    del _resources(template)["TaskRole"]["Condition"]
    _resources(template)[APP_TASK]["Properties"]["TaskRoleArn"] = {
        "Fn::GetAtt": ["TaskRole", "Arn"]
    }


def _collector_too_big(template: Template) -> None:
    _mapping(template, "Metrics")["Prometheus"]["CollectorMemory"] = 1024


def _shop_cpu_unstated(template: Template) -> None:
    del _resources(template)[APP_TASK]["Properties"]["ContainerDefinitions"][0]["Cpu"]


def _collector_cpu_beyond_the_task(template: Template) -> None:
    _mapping(template, "Metrics")["Prometheus"]["CollectorCpu"] = 256


def _limiter_above_the_hard_limit(template: Template) -> None:
    _mapping(template, "Metrics")["Prometheus"]["CollectorMemoryLimit"] = 300


NO_METRICS = {"Metrics": "none"}
METRICS_BREAKAGES: list[
    tuple[Callable[[Template], None], Callable[[Stack], list[str]], str, dict[str, str]]
] = [
    (_collector_essential, check_metrics, "essential: false", {}),
    (_collector_on_latest, check_metrics, "pinned to a version", {}),
    (_collector_never_restarted, check_metrics, "RestartPolicy", {}),
    (_collector_given_the_secrets, check_metrics, "no secrets", {}),
    (_collector_scrapes_another_port, check_metrics, "must scrape http://localhost:9100", {}),
    (_collector_scrapes_every_5_s, check_metrics, "a scrape interval of 15-30 s", {}),
    (_series_without_their_task, check_metrics, "its task's labels", {}),
    (_task_id_dropped, check_metrics, "its task's labels", {}),
    (_collector_writes_elsewhere, check_metrics, "must remote-write to <Workspace", {}),
    (_unsigned_writes, check_metrics, "signed by the sigv4auth extension", {}),
    (_signed_for_another_region, check_metrics, "in the stack's region", {}),
    (_limiter_last, check_metrics, "memory_limiter must come first", {}),
    (_task_role_writes_to_every_workspace, check_metrics, "nothing else in aps", {}),
    (_task_role_may_query, check_metrics, "nothing else in aps", {}),
    (_task_role_grants_everything, check_images, "beyond the images' prefix", {}),
    (_collector_in_the_migration, check_metrics, "no collector and no metrics port", {}),
    (_shop_not_told_the_port, check_metrics, "SHOP_METRICS_PORT", {}),
    (_metrics_port_opened, check_security_group_chain, "ports 9100-9100", {}),
    (_workspace_kept_without_metrics, check_metrics, "Metrics=none", NO_METRICS),
    (_collector_kept_without_metrics, check_metrics, "Metrics=none", NO_METRICS),
    (
        _role_kept_without_grants,
        check_images,
        "a task role with nothing to grant",
        {**NO_METRICS, "ImageStorage": "database"},
    ),
    (_collector_too_big, check_task_sizes, "at most a quarter", {}),
    (_shop_cpu_unstated, check_task_sizes, "the task's less the collector's", {}),
    (_collector_cpu_beyond_the_task, check_task_sizes, "more than the task", {"TaskCpu": "512"}),
    (_limiter_above_the_hard_limit, check_task_sizes, "memory_limiter must stay below", {}),
]


@pytest.mark.parametrize(
    ("breakage", "check", "complaint", "parameters"),
    METRICS_BREAKAGES,
    ids=[f"{b.__name__.strip('_')}-{c.__name__}" for b, c, _, _ in METRICS_BREAKAGES],
)
def test_each_metrics_check_catches_a_broken_copy(template, breakage, check, complaint, parameters):
    broken = copy.deepcopy(template)
    breakage(broken)
    problems = check(Stack.of(broken, Image="example/shop:1", **parameters))
    assert any(complaint in problem for problem in problems), problems


# -- cfn-lint ----------------------------------------------------------------------------------


def tool(name: str) -> str:
    """The tool installed next to this interpreter (the venv), else on PATH; a missing one
    skips by name, or fails under SHOP_TEST_REQUIRE_SERVICES=1."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=path)
    if found is None:
        message = f"{name} is not installed (pip install -e '.[dev]')"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message}; SHOP_TEST_REQUIRE_SERVICES=1 forbids skipping", pytrace=False)
        pytest.skip(message)
    return found


def test_cfn_lint_finds_no_error_and_no_warning():
    result = subprocess.run(
        [tool("cfn-lint"), "--format", "parseable", "--", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
