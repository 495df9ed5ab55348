"""The HTTP server: `vlfuse serve MODEL_DIR [MODEL_DIR] [--index DIR]` (FastAPI + uvicorn, `pip install 'vlfuse[serve]'`).

    from vlfuse.serve import Service, create_app
    app = create_app(Service.load([vqa_dir, retrieval_dir], index_dir))
"""

from __future__ import annotations


def __getattr__(name: str):
    # FastAPI is an optional dependency: imported when the app is asked for, not with the package
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("Service", "ServeSettings"):
        from . import service

        return getattr(service, name)
    raise AttributeError(name)


__all__ = ["Service", "ServeSettings", "create_app"]
