"""The search page: one static page and a small read-only JSON API over the search service's async SDK.

`python -m web` (see --help). Never imports torch: it only talks to the search service.
"""
