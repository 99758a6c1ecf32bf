"""The dashboard: HTML pages over the /api/v1 endpoints, served by the same FastAPI app."""

from zooens.service.dashboard.router import router

__all__ = ["router"]
