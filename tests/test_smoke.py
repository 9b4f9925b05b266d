async def test_home_page_renders(client):
    response = await client.get("/")
    assert response.status_code == 200
    body = await response.get_data(as_text=True)
    assert 'role="status"' in body


async def test_healthz(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert (await response.get_json())["database"] == "ok"
