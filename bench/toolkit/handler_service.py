"""The handler service Multi Model Server loads: its one class, around the handler."""

from inference_handler import SpacyInferenceHandler
from sagemaker_inference.default_handler_service import DefaultHandlerService
from sagemaker_inference.transformer import Transformer


class HandlerService(DefaultHandlerService):
    def __init__(self):
        super().__init__(transformer=Transformer(default_inference_handler=SpacyInferenceHandler()))
