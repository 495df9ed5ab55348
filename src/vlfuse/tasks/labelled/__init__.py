"""Tasks matching and classification: image + text -> one of C classes, a head on the fused representation.

matching: is the statement true of the image (NLVR style)? Classes false/true, labels from the
statement formats or made from captions with hard negatives (vlfuse.data.matching). Metrics:
accuracy, macro-F1, AUROC of "true", and consistency (every image of a sentence right).

classification: a label per (image, text) from a JSONL/CSV table (`image`, `text`, `label`:
hateful memes, MM-IMDb style). Classes are the training labels, sorted. Metrics: accuracy,
macro-F1, AUROC (binary, or one-vs-rest macro).

Both ride on the VQA machinery: statements grouped by image (each image encoded once for all of
its statements), the classifier head, cross-entropy. A frozen pretrained image encoder's backbone
runs once per training image (its output kept in memory), not once per epoch.

Their entries (TASK) are vlfuse.tasks.matching and vlfuse.tasks.classification; this package is the
implementation they share.
"""
