"""The Python system's model, for the reference tests (defined in scripts/imgtype_torch.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from imgtype_torch import ImageTypeClassifier, load_model_file, state_dict_for_rust  # noqa: E402,F401
