"""``refbook kernel install``: a Jupyter kernel "Python 3 (refbook)" that starts with
the refbook extension loaded."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

NAME = "refbook"


def spec() -> dict:
    return {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.extensions=['refbook']"],
        "display_name": "Python 3 (refbook)",
        "language": "python",
        "metadata": {"debugger": True},
    }


def install(user: bool = False, prefix: str | None = None) -> str:
    """Install the kernelspec; returns where it went."""
    from jupyter_client.kernelspec import KernelSpecManager
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, NAME)
        os.mkdir(path)
        with open(os.path.join(path, "kernel.json"), "w") as f:
            json.dump(spec(), f, indent=2)
        logos = os.path.join(os.path.dirname(os.path.abspath(__file__)), "logos")
        for size in (32, 64):       # Jupyter shows them in the launcher and the tab
            name = f"logo-{size}x{size}.png"
            shutil.copy(os.path.join(logos, name), os.path.join(path, name))
        return KernelSpecManager().install_kernel_spec(path, NAME, user=user, prefix=prefix)


def main(argv) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="refbook kernel")
    sub = ap.add_subparsers(dest="what", required=True)
    inst = sub.add_parser("install", help='install the "Python 3 (refbook)" kernel')
    where = inst.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="for this user only")
    where.add_argument("--sys-prefix", action="store_true",
                       help="into this Python environment (the default)")
    args = ap.parse_args(argv)
    dest = install(user=args.user, prefix=None if args.user else sys.prefix)
    print(f"installed the kernel \"Python 3 (refbook)\" in {dest}")
    return 0
