"""The web console: server-rendered pages over the API's own handlers, in English and
Chinese, with its scripts, styles and the API documentation pages served locally."""

from billfold.web.site import install

__all__ = ["install"]
