"""Typed aiohttp application keys shared by the engine's route areas."""

from __future__ import annotations

from aiohttp import web

from .settings import Settings

__all__ = ["SETTINGS_KEY"]

SETTINGS_KEY = web.AppKey("settings", Settings)
