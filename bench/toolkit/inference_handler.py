"""The toolkit's inference handler, as AWS's bring-your-own-container examples write one:
model_fn, input_fn, predict_fn and output_fn, for the image's baked pipeline with NER only
(as our server runs it) and the same one-text JSON in and out as ours."""

import json
import os

import spacy
from sagemaker_inference.default_inference_handler import DefaultInferenceHandler


class SpacyInferenceHandler(DefaultInferenceHandler):
    def default_model_fn(self, model_dir, context=None):
        return spacy.load(os.environ["SPACY_DEFAULT_MODEL"], enable=["ner"])

    def default_input_fn(self, input_data, content_type, context=None):
        return json.loads(input_data)["text"]

    def default_predict_fn(self, data, model, context=None):
        doc = model(data)
        return [
            {"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char}
            for e in doc.ents
        ]

    def default_output_fn(self, prediction, accept, context=None):
        return json.dumps({"entities": prediction}, ensure_ascii=False)
