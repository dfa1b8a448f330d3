"""``sfumato serve``: one loaded pipeline behind an HTTP job API (FastAPI + uvicorn, the ``serve``
extra). ``jobs`` holds the queue and the micro-batching worker, ``app`` the HTTP routes, ``page``
the web page, ``command`` the command line; ``ray_serve`` deploys the same app on Ray Serve.
Only ``app`` and ``command``'s ``run`` import FastAPI, so the core imports without the extra."""
