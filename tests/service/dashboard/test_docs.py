"""/docs and /redoc in headless Chromium: Swagger UI and ReDoc come from this server's files, never from a CDN."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.service.dashboard.test_pages import console_errors, open_page, wait_for

pytestmark = [pytest.mark.browser]

REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def foreign_requests(driver, base: str) -> list[str]:
    """Every resource the page loaded (performance entries) from anywhere but the live server."""
    host = urlsplit(base).netloc
    urls = driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
        ".concat([performance.getEntriesByType('navigation')[0].name]);"
    )
    return [u for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss") and urlsplit(u).netloc != host]


def test_swagger_ui_renders_the_operations_offline(browser, live_server, screenshots):
    from selenium.webdriver.common.by import By

    driver = browser
    open_page(driver, live_server.url + "/docs", "#swagger-ui .opblock")
    paths = {e.get_attribute("data-path") for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert "/api/v1/jobs" in paths and "/api/v1/datasets" in paths
    assert driver.find_element(By.CSS_SELECTOR, "#swagger-ui .info .title").text.startswith("zooens")
    assert foreign_requests(driver, live_server.url) == []
    assert not driver.find_elements(By.CSS_SELECTOR, ".errors-wrapper")
    driver.save_screenshot(str(screenshots / "docs.png"))
    assert console_errors(driver) == []


def test_redoc_renders_its_menu_offline(browser, live_server, screenshots):
    from selenium.webdriver.common.by import By

    driver = browser
    open_page(driver, live_server.url + "/redoc", "redoc .menu-content li")
    wait_for(
        driver,
        lambda d: any("jobs" in e.text.lower() for e in d.find_elements(By.CSS_SELECTOR, ".menu-content li")),
        what="the jobs tag in ReDoc's menu",
    )
    assert "zooens" in driver.find_element(By.CSS_SELECTOR, "redoc h1").text
    driver.save_screenshot(str(screenshots / "redoc.png"))
    # ReDoc's footer always asks for Redocly's logo from its CDN; the CSP (img-src 'self' data:) refuses it in the
    # browser, so nothing leaves for that host either: the only foreign entry, each one refused, nothing else logged.
    foreign = foreign_requests(driver, live_server.url)
    assert set(foreign) <= {REDOCLY_LOGO}
    errors = [e["message"] for e in console_errors(driver)]
    refused = [m for m in errors if "Content Security Policy" in m and REDOCLY_LOGO in m]
    assert len(refused) == len(foreign) and len(errors) == len(refused), errors


def test_docs_assets_come_from_the_installed_package(live_server):
    import urllib.request

    import fastapi_offline

    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        with urllib.request.urlopen(live_server.url + "/docs/static/" + name, timeout=30) as resp:
            assert resp.read() == (Path(fastapi_offline.__file__).parent / "static" / name).read_bytes()
    for page in ("/docs", "/redoc"):
        with urllib.request.urlopen(live_server.url + page, timeout=30) as resp:
            html = resp.read().decode()
            csp = resp.headers["content-security-policy"]
        assert "cdn." not in html and "https://" not in html
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp.split("script-src", 1)[1].split(";")[0]
