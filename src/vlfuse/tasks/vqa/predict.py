"""The Python face of a trained vqa (and matching / classification) model: `vlfuse.load(MODEL_DIR)` returns
a Predictor, `.predict(image, question)`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ...data.formats.common import check_question
from ...data.tokenizer import encode_ids, pad_ids
from ...data.images import image_tensor
from ...errors import ConfigError
from ...models.saved import SavedModel


@dataclass
class Prediction:
    answer: str
    confidence: float
    top: list[tuple[str, float]]  # (answer, probability), most likely first


class Predictor:
    def __init__(self, saved: SavedModel):
        self.saved = saved
        self.model, self.config, self.tokenizer, self.answers = saved.model, saved.config, saved.tokenizer, saved.answers
        self._warned_no_scene = False

    def _scene_graph(self, scene, knowledge_graph=None):
        """The batch of one scene graph (joined with `knowledge_graph` when given, else the model's own), or
        None (with a one-time warning when the model expects one)."""
        from ...data import scene_graph as sg

        trained_with = self.config.data.scene_graphs
        if scene is None:
            if trained_with and not self._warned_no_scene:
                self._warned_no_scene = True
                warnings.warn(f"this model was trained with scene graphs (data.scene_graphs: {trained_with}); "
                              "none was given, so it answers from the image alone (pass scene=... / --scene)",
                              stacklevel=3)
            return None
        if not trained_with:
            raise ConfigError("this model was trained without scene graphs: it cannot read a scene (leave it out)")
        if not isinstance(scene, sg.SceneGraph):
            if isinstance(scene, (str, Path)):
                from ...data.formats.common import read_json
                from ...data.formats.fields import Where

                scene = sg.scene_from_json(read_json(scene), Where(Path(scene)))
            else:
                scene = sg.scene_from_json(scene)
        from ...data.knowledge_graph import encode_for_model

        own = self.saved.knowledge_graph
        if knowledge_graph is None and own is not None and not own.triples:
            warnings.warn("this model reads a knowledge graph per sample (data.knowledge_graph: per_sample); none "
                          "was given, so it answers without facts (pass knowledge_graph=... / --knowledge-graph)",
                          stacklevel=3)
        per_image = None if knowledge_graph is None else {Path("scene"): self._knowledge_graph(knowledge_graph)}
        encoded = encode_for_model({Path("scene"): scene}, self.saved, per_image)[Path("scene")]
        return sg.batch_scene_graphs([encoded])

    def _knowledge_graph(self, graph):
        """`graph` (a KnowledgeGraph, or a .jsonl / .csv path) read with the model's relation ids."""
        from ...data import knowledge_graph as kg

        if self.saved.knowledge_graph is None:
            raise ConfigError("this model was trained without a knowledge graph: it cannot read one (leave it out)")
        if not isinstance(graph, kg.KnowledgeGraph):
            graph = kg.read_knowledge_graph(graph)
        return kg.with_vocabulary(graph, self.saved.knowledge_graph.vocabulary, graph.source or "knowledge graph")

    @torch.no_grad()
    def logits(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               image_index: torch.Tensor | None = None, graph=None) -> torch.Tensor:
        """Answer logits [B_q, answers] (float, on the CPU) of a prepared batch: uint8 images [B_img, 3, S, S],
        token ids and mask [B_q, L], image_index [B_q] (None: question i is about image i)."""
        device = next(self.model.parameters()).device
        logits, _ = self.model.eval()(images.to(device), input_ids.to(device), attention_mask.to(device),
                                      None if image_index is None else image_index.to(device),
                                      graph=None if graph is None else graph.to(device))
        return logits.float().cpu()

    @torch.no_grad()
    def predict(self, image, question: str, top_k: int = 5, scene=None, knowledge_graph=None) -> Prediction:
        """Answer one question about one image (a path, raw bytes or a PIL image). scene: the image's
        scene graph, for a model trained with them; knowledge_graph: its facts (see `predict_many`)."""
        return self.predict_many(image, [question], top_k, scene, knowledge_graph)[0]

    @torch.no_grad()
    def predict_many(self, image, questions: list[str], top_k: int = 5, scene=None,
                     knowledge_graph=None) -> list[Prediction]:
        """Several questions about the same image, encoding the image once.

        scene (models trained with data.scene_graphs only): a SceneGraph, a path to a JSON scene, or
        the scene itself (vlfuse.data.scene_graph.scene_from_json: built-in, NLVR or COCO-style).
        Without one such a model answers from the image alone, and says so once (a warning).
        knowledge_graph (models trained with data.knowledge_graph): a .jsonl / .csv path or a KnowledgeGraph
        joined to the scene instead of the model's own graph; a per_sample model reads no facts without it.
        """
        questions = [check_question(q) for q in questions]
        ids, mask = pad_ids(encode_ids(self.tokenizer, questions, self.config.data.max_question_length))
        images = image_tensor(image, self.config.data.image_size).unsqueeze(0)
        index = torch.zeros(len(questions), dtype=torch.long)
        probs = self.logits(images, ids, mask, index, self._scene_graph(scene, knowledge_graph)).softmax(-1)
        values, indices = probs.topk(min(top_k, probs.shape[-1]), -1)
        results = []
        for row_values, row_indices in zip(values.tolist(), indices.tolist()):
            top = [(self.answers[i], p) for i, p in zip(row_indices, row_values)]
            results.append(Prediction(top[0][0], top[0][1], top))
        return results
