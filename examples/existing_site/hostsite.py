"""A small Flask site with its own login, mounting chatapp under ``/assistant``.

It stands for the site you already have: its own pages, templates, static files, error
pages and sign-in (flask-login). chatapp adds the chat page and API under one prefix and
asks the site's login who owns each chat; nothing else of the site changes.

Run it: ``examples/existing_site/run`` (or ``gunicorn -c ../../gunicorn.conf.py wsgi:app``
from this folder), then sign in as ``alice`` or ``bob`` (passwords below; a demo, not a
user store).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from flask import Flask, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from werkzeug.security import check_password_hash, generate_password_hash

from chatapp import ChatApp

#: Demo accounts. A real site keeps users in its database.
DEMO_PASSWORDS = {"alice": "wonderland", "bob": "builder"}


@dataclass
class User(UserMixin):
    id: str
    password_hash: str


def create_app() -> Flask:
    app = Flask(__name__)
    # The site's own key signs its session cookie; every worker must share it.
    app.config["SECRET_KEY"] = os.environ.get("SITE_SECRET_KEY") or secrets.token_hex(32)
    users = {name: User(name, generate_password_hash(password)) for name, password in DEMO_PASSWORDS.items()}

    login = LoginManager(app)
    login.login_view = "login"

    @login.user_loader
    def load_user(user_id: str) -> User | None:
        return users.get(user_id)

    @app.get("/")
    def home() -> str:
        return render_template("home.html")

    @app.get("/account")
    @login_required
    def account() -> str:
        return render_template("account.html")

    @app.route("/login", methods=["GET", "POST"], endpoint="login")
    def login_page() -> object:
        error = None
        if request.method == "POST":
            user = users.get(request.form.get("username", ""))
            if user and check_password_hash(user.password_hash, request.form.get("password", "")):
                login_user(user)
                return redirect(url_for("account"))
            error = "Wrong name or password."
        return render_template("login.html", error=error), 401 if error else 200

    @app.post("/logout")
    def logout() -> object:
        logout_user()
        return redirect(url_for("home"))

    @app.errorhandler(404)
    def not_found(error: Exception) -> tuple[str, int]:
        return render_template("404.html"), 404

    @app.errorhandler(500)
    def server_error(error: Exception) -> tuple[str, int]:
        return render_template("500.html"), 500

    # The one line that adds the assistant: the site's login decides who owns a chat,
    # and nobody signed in means the API answers 401.
    ChatApp(app, url_prefix="/assistant", owner=lambda: current_user.get_id() if current_user.is_authenticated else None)
    return app
