"""Peak GPU memory of whole notebooks on Stable Diffusion 1.5's layout (random weights, 512², float16).

    python benchmarks/notebook_memory.py                       # notebooks 01 03 04 09 14, writes results-notebooks-gpu.md
    python benchmarks/notebook_memory.py --notebooks 04 09     # a subset
    python benchmarks/notebook_memory.py --model tiny --device cpu   # a dry run of the machinery (no GPU)

Builds `sdexplain.architectures.build_pipeline("sd15")` (the real model's shapes and compute, nothing
downloaded), saves it with `save_pretrained` (float16 weights as the `fp16` variant, as on the Hub) and
executes each notebook with SDEXPLAIN_MODEL pointing at that folder, so the notebook loads it as a
reader's Colab session loads a Hub model: on CUDA, in float16. After the last cell one more cell reads
the kernel's `torch.cuda.max_memory_allocated()` (tensors: what decides "out of memory" on a 16 GB
T4, which also needs room for the CUDA context, ~0.3–0.5 GB) and `max_memory_reserved()` (what
PyTorch's caching allocator held). Random weights make noise images, but every tensor has the real
size, so memory and time are the real model's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_NOTEBOOKS = ("01", "03", "04", "09", "14")
MARKER = "SDEXPLAIN_PEAK_MEMORY "
PROBE = f"""import json, torch
print("{MARKER}" + json.dumps({{"allocated": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
                               "reserved": torch.cuda.max_memory_reserved() if torch.cuda.is_available() else None}}))"""


def save_model(name: str, folder: Path, device: str) -> None:
    import torch
    from sdexplain.architectures import build_pipeline

    if device == "cuda":
        build_pipeline(name, dtype=torch.float16).save_pretrained(folder, variant="fp16")
    else:
        build_pipeline(name).save_pretrained(folder)


def run_notebook(path: Path, model: Path, timeout: int) -> dict:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    saved = os.environ.get("SDEXPLAIN_MODEL")
    os.environ["SDEXPLAIN_MODEL"] = str(model)  # the kernel inherits it; put back afterwards
    try:
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(path.parent)}}).execute()
        seconds = time.perf_counter() - start
    finally:
        if saved is None:
            os.environ.pop("SDEXPLAIN_MODEL", None)
        else:
            os.environ["SDEXPLAIN_MODEL"] = saved
    errors = [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    peak = {"allocated": None, "reserved": None}
    for output in nb.cells[-1].outputs:
        for line in output.get("text", "").splitlines():
            if line.startswith(MARKER):
                peak = json.loads(line[len(MARKER) :])
    return {"notebook": path.name, "seconds": seconds, "errors": errors, **peak}


def markdown(rows: list[dict], model: str, device: str) -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    gib = lambda b: "—" if b is None else f"{b / 2**30:.2f}"  # noqa: E731
    lines = [
        f"# Notebooks on {model}'s layout (random weights), {device}: peak memory per notebook",
        "",
        f"Machine: {gpu}; torch {torch.__version__}. Command: `python benchmarks/notebook_memory.py` (via `bash benchmarks/gpu.sh --notebooks`).",
        "",
        "| notebook | peak allocated (GiB) | peak reserved (GiB) | wall time (s) | errors |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['notebook']} | {gib(r['allocated'])} | {gib(r['reserved'])} | {r['seconds']:.0f} | {'; '.join(r['errors']) or 'none'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", nargs="+", default=list(DEFAULT_NOTEBOOKS), help="notebook numbers (default: 01 03 04 09 14)")
    parser.add_argument("--model", default="sd15", help="an architecture of sdexplain.architectures (default: sd15)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cuda: float16 as on Colab; cpu: a dry run")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results-notebooks-gpu.md")
    args = parser.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu for a dry run")
    paths = []
    for number in args.notebooks:
        found = sorted((ROOT / "notebooks").glob(f"{number}_*.ipynb"))
        if not found:
            parser.error(f"no notebook {number!r} in notebooks/")
        paths.append(found[0])
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / args.model
        save_model(args.model, model, args.device)
        rows = []
        for path in paths:
            row = run_notebook(path, model, args.timeout)
            rows.append(row)
            print(json.dumps(row), flush=True)
    text = markdown(rows, args.model, args.device)
    args.out.write_text(text)
    print(text)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
