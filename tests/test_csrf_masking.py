"""CSRF tokens are masked afresh for every use (pages are gzipped: BREACH), and every mask works."""
from conftest import csrf_from


async def test_each_page_carries_a_differently_masked_token_and_each_is_accepted(client):
    first = csrf_from(await (await client.get("/register")).get_data(as_text=True))
    second = csrf_from(await (await client.get("/register")).get_data(as_text=True))
    assert first != second
    for token in (first, second):
        response = await client.post("/register/check", form={"username": "abc"}, headers={"X-CSRF-Token": token})
        assert response.status_code == 200


async def test_a_token_of_the_right_shape_but_another_secret_is_refused(app, client):
    await client.get("/register")
    stranger = app.test_client()
    foreign = csrf_from(await (await stranger.get("/register")).get_data(as_text=True))
    for token in (foreign, "not base64 at all!", ""):
        response = await client.post("/register/check", form={"username": "abc"}, headers={"X-CSRF-Token": token})
        assert response.status_code == 403, token
