"""HTTP routes, one module per resource, assembled in `api_router`."""

from fastapi import APIRouter

from app.api.routes import admin, generate, health, images, interpolate, metrics, models, vae
from app.protocols.openai import routes as openai
from app.protocols.tfserving import routes as tfserving
from app.protocols.v2 import routes as v2

api_router = APIRouter()
api_router.include_router(generate.router)
api_router.include_router(interpolate.router)
api_router.include_router(vae.router)
api_router.include_router(models.router)
api_router.include_router(images.router)
api_router.include_router(health.router)
api_router.include_router(metrics.router)
api_router.include_router(admin.router)
api_router.include_router(v2.router)
api_router.include_router(tfserving.router)
api_router.include_router(openai.router)
