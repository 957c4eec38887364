"""A fleet owner uses the dashboard in a real browser: Debian's Chromium,
headless, driven by Playwright (which never downloads a browser of its own
here). They sign in from the keyboard, upload an image, start a campaign for
a project, watch simulated devices (loopback check-ins and reports) move
through the states on the campaign's page without reloading it, stop it and
sign out. A wrong password, a form posted without its CSRF token and a
device whose version is markup all end as they should.

One browser for the module; a fresh server (fixtures of test_campaign_server)
and browser context for each test. Screenshots of the fleet and campaign
pages, at desktop and phone width, are saved under the test's temporary
directory for a person to look at."""
import os
import urllib.parse

import pytest
from playwright.sync_api import expect, sync_playwright

from test_campaign_server import PASSWORD, image
from test_campaign_server import api, clock, config, fleet, srv  # noqa: F401 (fixtures)

CHROMIUM = "/usr/lib/chromium/chromium"  # the real binary; /usr/bin/chromium is a wrapper script
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MARKUP_VERSION = "<img src=x onerror=window.pwned=1>"
PHONE = {"width": 390, "height": 844}

# The campaign page refreshes every two seconds: wait for a state well past
# that, and allow for a machine busy with other tests.
expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail("no Chromium at %s: `apt-get install chromium` (.ci/run does)" % CHROMIUM)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, srv):
    context = browser.new_context(base_url=srv.url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(60_000)
    p = context.new_page()
    errors = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    context.close()
    assert errors == []  # no page's script failed


def sign_in(page, password=PASSWORD):
    """From the keyboard: the name field has the focus when the page opens."""
    page.goto("/")
    expect(page).to_have_url("/login?next=/")
    expect(page.get_by_label("Name")).to_be_focused()
    page.keyboard.type("admin")
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.keyboard.press("Enter")
    location = answer.value.headers.get("location")
    if location:  # signed in: the browser is still on its way there
        page.wait_for_url(urllib.parse.urljoin(answer.value.url, location))
    page.wait_for_load_state()


def shoot(page, tmp_path, name):
    """The page at desktop width, then at phone width."""
    page.screenshot(path=str(tmp_path / ("%s.png" % name)), full_page=True)
    size = page.viewport_size
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(tmp_path / ("%s-phone.png" % name)), full_page=True)
    page.set_viewport_size(size)


def device_row(page, token):
    return page.locator("#live tbody tr", has_text=token)


def test_an_owner_starts_a_project_campaign_watches_it_live_stops_it_and_signs_out(
        page, api, fleet, tmp_path):
    sign_in(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("Fleet")
    expect(page.locator("tbody tr")).to_have_count(4)
    page.keyboard.press("Tab")  # the first stop is the way past the header
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()

    page.get_by_role("link", name="New campaign").click()
    firmware = tmp_path / "garden-1.2.0.bin"
    firmware.write_bytes(image("1.2.0"))
    page.get_by_label("Firmware image or app bundle").set_input_files(str(firmware))
    page.get_by_role("button", name="Upload and check").click()
    checked = page.locator("#checked")
    expect(checked).to_contain_text("1.2.0")
    expect(checked).to_contain_text("esp32")
    expect(checked).to_contain_text("garden-1.2.0.bin")
    page.get_by_label("Target").select_option(label="alice/garden")
    page.get_by_label("Max attempts per device").fill("2")
    page.get_by_role("button", name="Start campaign").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Campaign #1: firmware 1.2.0")
    expect(page.locator("#live tbody tr")).to_have_count(2)  # a1 and a2 of alice/garden
    expect(device_row(page, "a1")).to_contain_text("pending")
    page.evaluate("window.neverReloaded = true")

    # The devices, over loopback as boards would.
    size = len(image("1.2.0"))
    assert api.check("a1", "1.0.0", chip="esp32")[0] == 200
    assert api.check("a2", "1.0.0", chip="esp32")[0] == 200
    expect(device_row(page, "a1")).to_contain_text("offered")
    assert api.report("a1", 1, "downloading", progress=size // 2)[0] == 204
    expect(device_row(page, "a1")).to_contain_text("downloading")
    expect(device_row(page, "a1")).to_contain_text("50%")
    shoot(page, tmp_path, "campaign-downloading")
    assert api.report("a2", 1, "failed",
                      error="ESP_ERR_OTA_VALIDATE_FAILED: image checksum")[0] == 204
    expect(device_row(page, "a2")).to_contain_text("0x1503 ESP_ERR_OTA_VALIDATE_FAILED")
    assert api.report("a1", 1, "installed")[0] == 204
    expect(device_row(page, "a1")).to_contain_text("installed")
    assert api.check("a1", "1.2.0", chip="esp32")[0] == 204  # rebooted into it: nothing due
    assert api.report("a1", 1, "confirmed")[0] == 204
    expect(device_row(page, "a1")).to_contain_text("confirmed")
    expect(page.locator("#live .legend")).to_contain_text("confirmed 1")
    expect(page.get_by_role("status")).to_have_text("Now 1 confirmed, 1 failed")  # read aloud
    assert page.evaluate("window.neverReloaded") is True
    expect(device_row(page, "a1").locator("td.version")).to_have_text("1.2.0")
    shoot(page, tmp_path, "campaign")

    page.get_by_role("link", name="Fleet").click()
    a1 = page.locator("tbody tr", has_text="a1")
    expect(a1).to_contain_text("confirmed")
    expect(a1.locator("td.version")).to_have_text("1.2.0")
    shoot(page, tmp_path, "fleet")
    a1.get_by_role("link", name="#1").click()
    page.get_by_role("link", name="Stop this campaign…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Stop campaign #1?")
    page.get_by_role("link", name="No, keep it running").click()
    assert api.status(1)[0]["active"]
    page.get_by_role("link", name="Stop this campaign…").click()
    page.get_by_role("button", name="Yes, stop it").click()
    expect(page.locator("#live")).to_contain_text("Stopped")
    assert not api.status(1)[0]["active"]

    page.get_by_role("link", name="Campaigns").click()
    expect(page.locator(".campaign-card")).to_contain_text("stopped")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    page.goto("/campaigns/1")
    expect(page).to_have_url("/login?next=/campaigns/1")


def test_a_wrong_password_leaves_the_owner_on_the_sign_in_page_with_a_message(page):
    sign_in(page, "not the password")
    expect(page.get_by_role("alert")).to_have_text("Wrong name or password.")
    page.goto("/images")
    expect(page).to_have_url("/login?next=/images")


def test_a_form_posted_without_its_csrf_token_is_refused(page, api, fleet):
    cid = api.start(image("1.1.0"), user="alice")
    sign_in(page)
    page.goto("/campaigns/%d/stop" % cid)
    page.locator("form.actions input[name=csrf]").evaluate("input => input.remove()")
    page.get_by_role("button", name="Yes, stop it").click()
    expect(page.get_by_role("alert")).to_contain_text("This form has expired")
    answer = page.request.post("/campaigns/%d/stop" % cid, form={"confirm": "1"})
    assert answer.status == 403
    assert api.status(cid)[0]["active"]


def test_a_device_whose_version_is_markup_shows_it_as_text(page, api, fleet):
    cid = api.start(image("1.1.0"), user="alice", allow_downgrade=1)
    assert api.check("a1", MARKUP_VERSION)[0] == 200
    sign_in(page)
    expect(page.locator("tbody tr", has_text="a1").locator("td.version")).to_have_text(
        MARKUP_VERSION)
    page.goto("/campaigns/%d" % cid)
    expect(device_row(page, "a1").locator("td.version")).to_have_text(MARKUP_VERSION)
    expect(page.locator("main img")).to_have_count(0)
    assert page.evaluate("window.pwned") is None
