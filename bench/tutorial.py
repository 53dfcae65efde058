"""The Milvus tutorial's way to ingest, the baseline the product is measured against: encode one picture,
insert one row, repeat."""

import io
import time

import torch
from PIL import Image
from pymilvus import MilvusClient

from encoder_service.model import ClipModel
from encoder_service.preprocess import clip_transform


def tutorial_ingest(checkpoint: str, images: list[bytes], milvus_file: str, device: str) -> float:
    """Pictures per second."""
    model = ClipModel(checkpoint, device)
    preprocess = clip_transform(model.image_resolution)
    # Milvus Lite's process may take a while to start while the bench's client processes load torch: one
    # rehearsal on 2 cores lost its baseline to pymilvus's default wait.
    client = MilvusClient(milvus_file, timeout=120)
    client.create_collection("tutorial", dimension=model.dimension, metric_type="COSINE", auto_id=True)
    started = time.perf_counter()
    with torch.inference_mode():
        for index, data in enumerate(images):
            picture = preprocess(Image.open(io.BytesIO(data)).convert("RGB"))[None].to(model.device)
            features = model.model.encode_image(picture).float()
            vector = (features / features.norm(dim=-1, keepdim=True))[0].tolist()
            client.insert("tutorial", {"vector": vector, "filepath": f"{index}.jpg"})
    rate = len(images) / (time.perf_counter() - started)
    client.close()
    return rate
