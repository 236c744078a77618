"""The naive baseline: per request, decode and run one forward pass; no batching.

The blocking work runs in FastAPI's threadpool, as its docs advise for blocking code. Same
checkpoint and same preprocessing as the real service, so only the serving strategy differs.

    VIT_DIGITS_CHECKPOINT=checkpoints/vit-digits.safetensors uvicorn bench.naive_app:app --port 8100
"""

from __future__ import annotations

import os

import torch
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from model.checkpoint import load_checkpoint
from model.preprocess import prepare_bytes

ckpt = load_checkpoint(os.environ.get("VIT_DIGITS_CHECKPOINT", "checkpoints/vit-digits.safetensors"))
app = FastAPI()


def _classify(data: bytes) -> dict[str, object]:
    x = torch.from_numpy(prepare_bytes(data).model_input[None])
    with torch.inference_mode():
        probs = ckpt.model(x).softmax(-1)[0]
    return {"digit": int(probs.argmax()), "probabilities": probs.tolist()}


@app.post("/v1/predict")
async def predict(request: Request) -> dict[str, object]:
    return await run_in_threadpool(_classify, await request.body())
