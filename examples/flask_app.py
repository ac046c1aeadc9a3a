"""The blog's Flask app, without its JWT code: jwtguard checks the token in front of it
(nginx auth_request, Caddy forward_auth, or `jwtguard --upstream`) and passes the user
on in X-Auth-User. Trust that header only from jwtguard's side of the network.

    pip install flask
    python3 examples/flask_app.py [PORT]    # or PORT=...; default 5000, 0 for any free one
"""

import os
import sys

from flask import Flask, jsonify, request

app = Flask(__name__)


def seen(**extra):
    """The user jwtguard vouched for, and every header this request came with."""
    user = request.headers.get("X-Auth-User")
    return jsonify(user=user, headers=dict(request.headers), **extra)


@app.get("/api/protected")
def protected():
    return seen()


@app.post("/api/orders")
def orders():
    return jsonify(method=request.method, order=request.get_json())


@app.get("/api/admin/stats")
def admin_stats():
    return seen(orders=0)


@app.get("/public/hello")
def hello():
    return seen(hello="world")


if __name__ == "__main__":
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "5000"))
    app.run(host="127.0.0.1", port=port)  # the development server logs every request
