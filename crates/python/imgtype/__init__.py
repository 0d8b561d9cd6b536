"""Image-type classifier for product photos, as the Python system's `run.py`:

    from imgtype import ImageClassificationAPI
    api = ImageClassificationAPI("results/run_xxx/model/best_model.safetensors")
    api.predict(["product/unhashed/a.jpg", ...])  # [{image_path, predicted_class, confidence}, ...]

torch is imported first so that its libtorch is the one this module uses.
"""
import torch  # noqa: F401  (loads libtorch for the extension)

from .imgtype import ImageClassificationAPI  # noqa: E402

__all__ = ["ImageClassificationAPI"]
