from tests.support import KETTLE


def test_grid_and_product_pages_render(client):
    assert client.get("/").status_code == 200
    page = client.get(f"/products/{KETTLE}")
    assert page.status_code == 200
    assert b"Blue Kettle" in page.data
