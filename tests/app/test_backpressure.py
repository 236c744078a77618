"""Back-pressure and deadlines over HTTP: a full queue answers 503 + Retry-After, a late one 504."""

import asyncio
import time

import httpx

from app.main import create_app
from app.settings import Settings

PNG = {"content-type": "image/png"}


async def _started(settings: Settings, slow_s: float):
    app = create_app(settings)
    ctx = app.router.lifespan_context(app)
    await ctx.__aenter__()
    for _ in range(200):
        if app.state.registry is not None:
            break
        await asyncio.sleep(0.02)
    served = app.state.registry.get(None)
    real = served.predict._run

    def slow(x):
        time.sleep(slow_s)  # a model far slower than the request rate
        return real(x)

    served.predict._run = slow
    return app, ctx


def test_full_queue_gets_503_with_retry_after_and_others_still_answered(tiny_checkpoint, digit_png):
    async def main():
        settings = Settings(checkpoints=[tiny_checkpoint], queue_size=2, max_batch_size=1, max_wait_ms=0)
        app, ctx = await _started(settings, 0.2)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                return await asyncio.gather(*(c.post("/v1/predict", content=digit_png, headers=PNG) for _ in range(8)))
        finally:
            await ctx.__aexit__(None, None, None)

    responses = asyncio.run(main())
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 503 in codes, codes
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "queue_full"


def test_request_past_its_deadline_gets_504(tiny_checkpoint, digit_png):
    async def main():
        settings = Settings(checkpoints=[tiny_checkpoint], request_timeout_s=0.05)
        app, ctx = await _started(settings, 0.3)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                late = await c.post("/v1/predict", content=digit_png, headers=PNG)
                await asyncio.sleep(0.3)
                alive = await c.get("/healthz")
                return late, alive
        finally:
            await ctx.__aexit__(None, None, None)

    late, alive = asyncio.run(main())
    assert late.status_code == 504 and late.json()["error"]["code"] == "inference_timeout"
    assert alive.status_code == 200
