"""Greedy tokens of a decoder LM ONNX file (compress's KV-cache layout), with only numpy and onnxruntime: the same
script runs on this machine and inside the qemu-arm64 userspace (compress.targets.qemu_lm), so their tokens can be
compared. The prompt is prefilled in one run, then one run per token. Prints one JSON document: the tokens, and
each step's margin (top-1 minus top-2 logit: how near a tie the choice was).

Example:
    $ python compress/targets/lm_greedy.py runs/tiny/model.int4-weight.onnx '[1, 2, 3]' 16 1
    {"tokens": [...], "margins": [...], "machine": "x86_64", "onnxruntime": "1.32.0"}
"""
import json
import platform
import sys

import numpy as np
import onnxruntime as ort


def greedy(path, prompt, steps, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    pasts = [n for n in inputs if n.startswith("past_key_values.")]
    shape = inputs[pasts[0]].shape
    cache = {n: np.zeros((1, int(shape[1]), 0, int(shape[3])), np.float32) for n in pasts}
    names = [o.name for o in session.get_outputs()]
    ids, length, tokens, margins = list(prompt), 0, [], []
    for _ in range(steps):
        total = length + len(ids)
        feeds = {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.ones((1, total), np.int64),
                 "position_ids": np.arange(length, total, dtype=np.int64)[None, :], **cache}
        outputs = dict(zip(names, session.run(None, feeds)))
        cache = {n.replace("present.", "past_key_values.", 1): v for n, v in outputs.items() if n.startswith("present.")}
        length = total
        logits = outputs["logits"][0, -1]
        ids = [int(np.argmax(logits))]
        tokens.append(ids[0])
        top2 = np.sort(logits)[-2:]
        margins.append(float(top2[1] - top2[0]))
    return tokens, margins


if __name__ == "__main__":
    file, prompt, steps, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    tokens, margins = greedy(file, prompt, steps, threads)
    print(json.dumps({"tokens": tokens, "margins": margins, "machine": platform.machine(),
                      "onnxruntime": ort.__version__}))
