"""torch.save of something that is no checkpoint (a list holding a tensor and a string).

usage: save_object.py OUT.pth"""
import sys

import torch

torch.save([torch.ones(2), "hello", {"epoch": 1}], sys.argv[1])
