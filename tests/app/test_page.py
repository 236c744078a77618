import re


def test_page_is_served_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert '<canvas id="pad"' in html and "aria-label" in html and "<label" in html
    assert "http://" not in html and "https://" not in html  # no CDN: everything from this server
    for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "css")):
        a = client.get(asset)
        assert a.status_code == 200 and kind in a.headers["content-type"]
        assert "https://" not in a.text


def test_page_static_rejects_unknown_files(client):
    assert client.get("/static/nope.js").json()["error"]["code"] == "not_found"
    assert client.get("/static/..%2Fsettings.py").status_code == 404


def test_page_and_docs_have_a_content_security_policy_and_every_response_the_security_headers(client):
    for path in ("/", "/docs", "/redoc", "/healthz", "/v1/models", "/nowhere", "/static/app.js"):
        r = client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "no-referrer", path
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
    page = client.get("/").headers["content-security-policy"]
    assert "script-src 'self';" in page and "unsafe" not in page
    assert "connect-src 'self'" in client.get("/docs").headers["content-security-policy"]
    assert client.get("/v1/models").headers["content-security-policy"].startswith("default-src 'none'")


def test_docs_are_served_without_a_cdn(client):
    for path in ("/docs", "/redoc"):
        html = client.get(path).text
        assert "http://" not in html and "https://" not in html and "<script>" not in html  # no inline script
        for asset in re.findall(r'(?:src|href)="(/[^"]+)"', html):
            r = client.get(asset)
            assert r.status_code == 200 and len(r.content) > 100, asset
    assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text
    assert client.get("/docs/assets/..%2Fcore.py").status_code == 404
