"""A copy of the torch-sys crate that compiles against another libtorch version.

tch pins one PyTorch version (2.13.0); the GPU machines lent here carry another (2.11.0) and
nothing can be installed there. torch-sys's C wrapper names every ATen operator of 2.13; the
few that an older libtorch lacks fail to compile. This copies torch-sys and replaces the body
of each such wrapper function with one that throws (tch turns it into an error naming the
operator, should anything call it; our model uses none of them).

usage: patch_torch_sys.py SOURCE_CRATE DEST_CRATE TORCH_INCLUDE_DIR
"""
import re
import shutil
import subprocess
import sys
from pathlib import Path

source, dest, include = (Path(a) for a in sys.argv[1:4])
if dest.exists():
    shutil.rmtree(dest)
shutil.copytree(source, dest)
generated = dest / "libtch" / "torch_api_generated.cpp"
FUNCTION_START = re.compile(r"^[A-Za-z_][\w \*]*\b(atg_\w+)\(")


def failing_lines():
    result = subprocess.run(
        ["g++", "-std=c++17", "-fsyntax-only", "-D_GLIBCXX_USE_CXX11_ABI=1", f"-I{include}",
         f"-I{include / 'torch/csrc/api/include'}", f"-I{dest / 'libtch'}", str(generated)],
        capture_output=True, text=True)
    pattern = re.compile(re.escape(generated.name) + r":(\d+):\d+: error")
    return sorted({int(m.group(1)) for m in pattern.finditer(result.stderr)}), result


stubbed = []
for attempt in range(4):
    lines_in_error, result = failing_lines()
    if not lines_in_error:
        break
    lines = generated.read_text().split("\n")
    starts = set()
    for number in lines_in_error:
        index = number - 1
        while index >= 0 and not FUNCTION_START.match(lines[index]):
            index -= 1
        if index < 0:
            sys.exit(f"error at line {number} is outside any atg_ function:\n{result.stderr[-3000:]}")
        starts.add(index)
    for start in sorted(starts, reverse=True):
        end = start
        while lines[end] != "}":
            end += 1
        name = FUNCTION_START.match(lines[start]).group(1)
        stubbed.append(name)
        lines[start + 1:end] = [
            f'  PROTECT(throw std::runtime_error("{name[4:]}: not in the libtorch this build links");)'
        ]
    generated.write_text("\n".join(lines))
else:
    sys.exit(f"torch_api_generated.cpp still fails to compile:\n{result.stderr[-3000:]}")
print(f"stubbed {len(stubbed)} operator(s) missing from this libtorch: {', '.join(sorted(stubbed))}")
