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
