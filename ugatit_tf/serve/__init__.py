"""The web page and a TF Serving compatible REST API (`python main.py --phase serve`).

`app.create_app` builds the FastAPI app over a `models.ServedModel` (a checkpoint or SavedModel
in this process, or a remote TF Serving), whose signature calls go through one `batcher.Batcher`
thread; `uploads` guards and decodes the page's photos, `page` turns a photo into the output and
attention images, `rest` speaks TF Serving's JSON. docs/web.md describes the page and the API.
"""
