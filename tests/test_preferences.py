"""A person's own preferences (profile): the theme and single-key shortcuts, kept per account,
rendered on <html> of every page, changed with or without JavaScript and audited."""
import re

from helpers import audit_rows, element_html, htmx, post, signed_in, text, triggers, user_row


def root_tag(html: str) -> str:
    return re.search(r"<html\b[^>]*>", html).group(0)


async def test_a_new_account_follows_the_device_with_single_key_shortcuts_on(app, make_user):
    account, client = await signed_in(app, make_user, "Customer")
    html = await text(await client.get("/profile"))
    assert root_tag(html) == '<html lang="en">'
    form = element_html(html, "profile-preferences")
    assert re.search(r'value="system" checked', form)
    assert re.search(r'name="single_key_shortcuts" value="1"[^>]*checked', form)


async def test_saving_without_javascript_redirects_and_every_page_then_carries_the_choice(app, db, make_user):
    account, client = await signed_in(app, make_user, "Customer")
    response = await post(client, "/profile/preferences", {"theme": "dark"})
    assert response.status_code == 303 and response.headers["Location"] == "/profile"
    row = await user_row(db, account["id"])
    assert (row.theme, row.single_key_shortcuts) == ("dark", False)
    for path in ("/profile", "/dashboard"):
        html = await text(await client.get(path))
        assert root_tag(html) == '<html lang="en" data-theme="dark" data-single-key-shortcuts="off">'


async def test_saving_with_htmx_answers_the_section_and_an_event_for_the_page(app, db, make_user):
    account, client = await signed_in(app, make_user, "Manager")
    response = await post(client, "/profile/preferences", {"theme": "light", "single_key_shortcuts": "1"},
                          headers=htmx("profile-preferences"))
    assert response.status_code == 200
    body = await text(response)
    assert body.lstrip().startswith('<section id="profile-preferences"')
    assert re.search(r'value="light" checked', body)
    assert triggers(response)["preferences"] == {"theme": "light", "singleKeyShortcuts": True}
    assert triggers(response)["toast"]["items"][0]["text"] == "Preferences saved."
    row = await user_row(db, account["id"])
    assert (row.theme, row.single_key_shortcuts, row.version) == ("light", True, 1)


async def test_a_change_is_audited_with_what_changed_and_a_save_of_the_same_is_not(app, db, make_user):
    account, client = await signed_in(app, make_user, "Customer")
    await post(client, "/profile/preferences", {"theme": "dark", "single_key_shortcuts": "1"})
    await post(client, "/profile/preferences", {"theme": "dark", "single_key_shortcuts": "1"})
    (event,) = await audit_rows(db, "preferences")
    assert (event.actor_id, event.target_id) == (account["id"], account["id"])
    assert event.changes == {"theme": ["system", "dark"]}


async def test_an_unknown_theme_is_refused_beside_its_field_and_nothing_changes(app, db, make_user):
    account, client = await signed_in(app, make_user, "Customer")
    for headers in ({}, htmx("profile-preferences")):
        response = await post(client, "/profile/preferences", {"theme": "purple"}, headers=headers)
        assert response.status_code == 422
        section = element_html(await text(response), "preferences-theme-error")
        assert "Choose one of the three themes." in section
    row = await user_row(db, account["id"])
    assert (row.theme, row.single_key_shortcuts) == ("system", True)
    assert await audit_rows(db, "preferences") == []


async def test_saving_needs_the_csrf_token_and_a_session(app, db, make_user):
    account, client = await signed_in(app, make_user, "Customer")
    refused = await post(client, "/profile/preferences", {"theme": "dark"}, csrf=False)
    assert refused.status_code == 403
    assert (await user_row(db, account["id"])).theme == "system"
    anonymous = await post(app.test_client(), "/profile/preferences", {"theme": "dark"})
    assert anonymous.status_code in (302, 303) and "/login" in anonymous.headers["Location"]


async def test_each_account_has_its_own(app, db, make_user):
    first, first_client = await signed_in(app, make_user, "Admin")
    second, second_client = await signed_in(app, make_user, "Customer")
    await post(first_client, "/profile/preferences", {"theme": "light"})
    assert root_tag(await text(await second_client.get("/dashboard"))) == '<html lang="en">'
