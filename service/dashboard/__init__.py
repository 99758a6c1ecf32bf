"""The dashboard: HTML pages over the /api/v1 endpoints, served by the same FastAPI app (`zooens.service.app`).

`router` holds the pages, `docs_router` the API's /docs and /redoc pages, and `unauthorised_page` is the guard
middleware's answer to a page request without a valid token (the sign-in form, 401)."""

from zooens.service.dashboard.docs import docs_router
from zooens.service.dashboard.router import router, unauthorised_page

__all__ = ["docs_router", "router", "unauthorised_page"]
