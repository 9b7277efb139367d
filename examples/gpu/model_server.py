#!/usr/bin/env python3
"""A stand-in model server on one GPU, for `agentctl worker --serve` and scripts/gpu-bench.

    python3 examples/gpu/model_server.py --port 8001 [--layers 12] [--width 768] [--batch-max 32]

A GPT-2-shaped transformer (random weights: the box has no network) generates on the GPU that
CUDA_VISIBLE_DEVICES names, behind a tiny HTTP server:

- `GET /health`: 200 once the model is loaded and warmed up;
- `POST /generate {"prompt_tokens": N, "max_tokens": M}`: M greedy tokens after a prompt of N
  tokens, `{"tokens": [...], "batch": B, "queue_ms": ..., "gpu_ms": ...}`.

Like vLLM it batches: requests that arrive while a batch runs wait for the next one, which takes
up to `--batch-max` of them in one `generate` call, so many concurrent episodes share the GPU's
work. That is what `--episodes-per-gpu` exploits; one episode at a time leaves it idle.
"""

import argparse
import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from transformers import GPT2Config, GPT2LMHeadModel


class Batcher:
    """Runs queued requests in batches of up to `batch_max` on one thread."""

    def __init__(self, model, batch_max):
        self.model = model
        self.batch_max = batch_max
        self.pending = queue.Queue()
        threading.Thread(target=self.loop, daemon=True).start()

    def submit(self, prompt_tokens, max_tokens):
        done = threading.Event()
        request = {"prompt_tokens": prompt_tokens, "max_tokens": max_tokens, "done": done,
                   "queued": time.monotonic()}
        self.pending.put(request)
        done.wait()
        return request

    def loop(self):
        while True:
            batch = [self.pending.get()]
            while len(batch) < self.batch_max:
                try:
                    batch.append(self.pending.get_nowait())
                except queue.Empty:
                    break
            started = time.monotonic()
            prompt = max(r["prompt_tokens"] for r in batch)
            new = max(r["max_tokens"] for r in batch)
            ids = torch.randint(0, 50000, (len(batch), prompt), device="cuda")
            with torch.inference_mode():
                out = self.model.generate(ids, attention_mask=torch.ones_like(ids),
                                          max_new_tokens=new, min_new_tokens=new,
                                          do_sample=False, pad_token_id=0)
            torch.cuda.synchronize()
            gpu_ms = (time.monotonic() - started) * 1000
            rows = out[:, prompt:].tolist()
            for request, row in zip(batch, rows):
                request["tokens"] = row[: request["max_tokens"]]
                request["batch"] = len(batch)
                request["queue_ms"] = (started - request["queued"]) * 1000
                request["gpu_ms"] = gpu_ms
                request["done"].set()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--batch-max", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = GPT2Config(n_layer=args.layers, n_embd=args.width, n_head=args.width // 64)
    model = GPT2LMHeadModel(config).to("cuda", dtype=torch.float16).eval()
    batcher = Batcher(model, args.batch_max)
    batcher.submit(16, 4)  # warm-up: CUDA context, kernels
    ready = {"ok": True}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health" and ready["ok"]:
                self.answer(200, {"status": "ok"})
            else:
                self.answer(404, {"error": "not found"})

        def do_POST(self):
            if self.path != "/generate":
                self.answer(404, {"error": "not found"})
                return
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            request = batcher.submit(int(body.get("prompt_tokens", 64)), int(body.get("max_tokens", 32)))
            self.answer(200, {k: request[k] for k in ("tokens", "batch", "queue_ms", "gpu_ms")})

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"model server on GPU {torch.cuda.get_device_name(0)}, port {args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
