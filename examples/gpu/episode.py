#!/usr/bin/env python3
"""One RL episode for scripts/gpu-bench: `steps` model calls of `max_tokens` tokens each.

    agentctl worker ... -- python3 examples/gpu/episode.py             # per job, via $AGENTD_MODEL_URL
    agentctl worker ... -- python3 examples/gpu/episode.py --load-model  # per job, loads its own model
    agentctl worker ... --persistent -- python3 examples/gpu/episode.py --persistent

Per job (the default) it reads the job on stdin and prints its result. `--load-model` is the shape
before model servers: every job imports torch and loads a model onto its GPU, then generates in
process. `--persistent` serves jobs over the worker's line protocol in one long-lived process.
"""

import json
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "client", "python"))


def generate_http(prompt_tokens, max_tokens):
    request = urllib.request.Request(
        os.environ["AGENTD_MODEL_URL"] + "/generate",
        json.dumps({"prompt_tokens": prompt_tokens, "max_tokens": max_tokens}).encode(),
        {"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as answer:
        return json.load(answer)


def local_generator():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12)).to("cuda", dtype=torch.float16).eval()

    def generate(prompt_tokens, max_tokens):
        started = time.monotonic()
        ids = torch.randint(0, 50000, (1, prompt_tokens), device="cuda")
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                 min_new_tokens=max_tokens, do_sample=False, pad_token_id=0)
        torch.cuda.synchronize()
        return {"tokens": out[0, prompt_tokens:].tolist(), "batch": 1,
                "gpu_ms": (time.monotonic() - started) * 1000}

    return generate


def run_episode(payload, generate):
    started = time.monotonic()
    batches = []
    for _ in range(int(payload.get("steps", 4))):
        answer = generate(int(payload.get("prompt_tokens", 128)), int(payload.get("max_tokens", 64)))
        batches.append(answer["batch"])
    return {"pid": os.getpid(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "episode_s": round(time.monotonic() - started, 3), "batches": batches}


def main():
    if "--persistent" in sys.argv:
        from agentd_client.worker import keep_stdout_for_protocol, serve_persistent

        keep_stdout_for_protocol()
        serve_persistent(lambda ctx: run_episode(ctx.payload or {}, generate_http))
        return
    job = json.load(sys.stdin)
    started = time.monotonic()
    generate = local_generator() if "--load-model" in sys.argv else generate_http
    setup_s = time.monotonic() - started
    result = run_episode(job.get("payload") or {}, generate)
    result["setup_s"] = round(setup_s, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
