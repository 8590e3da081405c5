"""The Python side of the vision bench: YOLO detection with onnxruntime and numpy,
with the same pre- and post-processing as vsum's `yolo.detect`.

Same steps, same arithmetic: decode the JPEG (Pillow), letterbox to the model's input
with OpenCV-style bilinear sampling (half-pixel centres, no antialiasing) and grey 114
padding, run the model, keep the best class per anchor above `confidence`, per-class NMS
at `iou`, at most `max_detections`, and map boxes back to the original pixels.

Usage: python3 yolo_ort.py MODEL KEYFRAMES_DIR BATCH THREADS REPEAT
Prints one JSON line: images, seconds, images_per_s, and the detections (class ids per
image) so the bench can check that both sides agree.
"""

import json
import math
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image


def letterbox(rgb, width, height):
    h0, w0 = rgb.shape[:2]
    gain = min(width / w0, height / h0)
    nw, nh = int(math.floor(w0 * gain + 0.5)), int(math.floor(h0 * gain + 0.5))
    left = int(math.floor((width - nw) / 2 - 0.1 + 0.5))
    top = int(math.floor((height - nh) / 2 - 0.1 + 0.5))

    def taps(dst, src):
        scale = src / dst
        s = (np.arange(dst) + 0.5) * scale - 0.5
        s = np.maximum(s, 0.0)
        i0 = np.minimum(np.floor(s).astype(np.int64), src - 1)
        f = (s - i0).astype(np.float32)
        i1 = np.minimum(i0 + 1, src - 1)
        return i0, i1, f

    x0, x1, fx = taps(nw, w0)
    y0, y1, fy = taps(nh, h0)
    img = rgb.astype(np.float32)
    top_rows = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
    bot_rows = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
    resized = top_rows * (1 - fy)[:, None, None] + bot_rows * fy[:, None, None]
    out = np.full((3, height, width), 114.0 / 255.0, dtype=np.float32)
    out[:, top:top + nh, left:left + nw] = resized.transpose(2, 0, 1) / 255.0
    return out, gain, left, top


def nms(boxes, scores, iou):
    order = np.argsort(-scores, kind="stable")
    keep = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy1 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx2 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy2 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        union = areas[i] + areas[order[1:]] - inter
        ratio = np.where(union > 0, inter / np.maximum(union, 1e-12), 0)
        order = order[1:][ratio <= iou]
    return keep


def detect(out, gain, left, top, w0, h0, confidence=0.25, iou=0.45, max_det=300):
    scores = out[4:]
    cls = scores.argmax(0)
    conf = scores[cls, np.arange(scores.shape[1])]
    m = conf > confidence
    cx, cy, w, h = out[0][m], out[1][m], out[2][m], out[3][m]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    conf, cls = conf[m], cls[m]
    dets = []
    for c in np.unique(cls):
        idx = np.nonzero(cls == c)[0]
        for k in nms(boxes[idx], conf[idx], iou):
            dets.append((float(conf[idx][k]), int(c), boxes[idx][k]))
    dets.sort(key=lambda d: -d[0])
    result = []
    for score, c, b in dets[:max_det]:
        x1 = min(max((b[0] - left) / gain, 0), w0)
        y1 = min(max((b[1] - top) / gain, 0), h0)
        x2 = min(max((b[2] - left) / gain, 0), w0)
        y2 = min(max((b[3] - top) / gain, 0), h0)
        result.append({"class_id": c, "confidence": score, "box": [x1, y1, x2, y2]})
    return result


def main():
    model, folder, batch, threads, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    height, width = inp.shape[2], inp.shape[3]
    files = [k["file"] for k in json.load(open(f"{folder}/keyframes.json"))["keyframes"]]
    # Warm-up, as the Rust side loads and runs the model once before timing.
    warm, _, _, _ = letterbox(np.asarray(Image.open(f"{folder}/{files[0]}").convert("RGB")), width, height)
    sess.run(None, {inp.name: np.stack([warm] * batch)})
    detections = []
    t = time.perf_counter()
    for _ in range(repeat):
        detections = []
        for start in range(0, len(files), batch):
            chunk = files[start:start + batch]
            prepared = []
            for f in chunk:
                rgb = np.asarray(Image.open(f"{folder}/{f}").convert("RGB"))
                x, gain, left, top = letterbox(rgb, width, height)
                prepared.append((x, gain, left, top, rgb.shape[1], rgb.shape[0]))
            out = sess.run(None, {inp.name: np.stack([p[0] for p in prepared])})[0]
            for i, p in enumerate(prepared):
                detections.append(detect(out[i], *p[1:]))
    secs = time.perf_counter() - t
    n = len(files) * repeat
    print(json.dumps({
        "images": n,
        "seconds": secs,
        "images_per_s": n / secs,
        "onnxruntime": ort.__version__,
        "classes": [[d["class_id"] for d in img] for img in detections],
    }))


if __name__ == "__main__":
    main()
