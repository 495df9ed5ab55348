"""Training losses: each a plain function, with a thin nn.Module where it holds state.

contrastive (CLIP InfoNCE, gathered across processes), hinge (VSE++), itm (hard negatives, matching
loss), masking + mlm (BERT masking, masked language modelling), mrm (UNITER masked regions),
adversarial (gradient reversal, modality discriminator), alignment (MMD, CORAL), translation
(cross-modal translation). Import from the submodules: nothing is registered on import.
"""
