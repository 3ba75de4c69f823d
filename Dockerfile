# syntax=docker/dockerfile:1
#
# The shop as one image: `docker build -t shop .` then, for one process with everything in it,
# `docker run -p 8000:8000 shop`; for several instances set SHOP_DATABASE_URL, SHOP_REDIS_URL
# and SHOP_SECRET_KEY (see shop/config.py) and the SHOP_* gunicorn variables in gunicorn.conf.py.

# --- builder: wheels for every dependency, so the runtime needs no compiler and no index -------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# The dependency list comes from pyproject.toml alone, so this layer (the slow one) is rebuilt
# only when the dependencies change, not on every change to the code.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.txt

# --- runtime: the dependencies from those wheels, the shop as source under /app ---------------
FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid/gid, so volume permissions and security policies can name it.
RUN groupadd --system --gid 10001 shop \
    && useradd --system --uid 10001 --gid shop --create-home --home-dir /home/shop \
        --shell /usr/sbin/nologin shop

# Installed from the builder's wheels through a bind mount: the wheels never become a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl

# The app finds templates/ and static/ next to the shop package (shop.ROOT), so the source
# stays side by side here rather than in site-packages. Owned by root: the app cannot change
# its own code; it may write only instance/ (the SQLite file of the single-process default).
WORKDIR /app
COPY shop/ ./shop/
COPY templates/ ./templates/
COPY static/ ./static/
COPY wsgi.py gunicorn.conf.py ./
RUN mkdir instance && chown shop:shop instance

USER 10001:10001
EXPOSE 8000

# The slim image has no curl. Port 8000 is the SHOP_BIND default; change both together.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["gunicorn", "wsgi:app", "-c", "gunicorn.conf.py"]
