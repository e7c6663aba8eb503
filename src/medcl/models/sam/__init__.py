"""SAM-family promptable segmenters (LiteMedSAM, SAM/MedSAM ViT-B), ported for medcl.

Our own implementation of the published architectures, with the parameter names of the official
checkpoints so that they load with ``strict=True``:

* :mod:`.tiny_vit` / :mod:`.vit`: image encoders (TinyViT for LiteMedSAM, ViT-B for SAM/MedSAM);
* :mod:`.prompt_encoder`, :mod:`.transformer`, :mod:`.mask_decoder`: SAM's prompt side;
* :mod:`.sam`: :class:`SamModel` composing the three;
* :mod:`.checkpoint`: :func:`load_sam_checkpoint`, :func:`find_lite_medsam_weights`;
* :mod:`.preprocess`: LiteMedSAM's MR preprocessing, box scaling and logit postprocessing;
* :mod:`.build`: builders and :data:`SAM_REGISTRY`.
"""

from .build import (
                         SAM_REGISTRY,
                         build_lite_medsam,
                         build_sam,
                         build_sam_tiny,
                         build_sam_vit_b,
)
from .checkpoint import find_lite_medsam_weights, load_sam_checkpoint, read_state_dict
from .mask_decoder import MaskDecoder
from .preprocess import (
                         box_from_mask,
                         normalize_volume,
                         postprocess_logits,
                         predict_with_boxes,
                         prepare_slice,
                         scale_boxes,
)
from .prompt_encoder import PromptEncoder
from .sam import SamModel
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer
from .vit import ImageEncoderViT

__all__ = [
    "SAM_REGISTRY", "ImageEncoderViT", "MaskDecoder", "PromptEncoder", "SamModel", "TinyViT",
    "TwoWayTransformer", "box_from_mask", "build_lite_medsam", "build_sam", "build_sam_tiny",
    "build_sam_vit_b", "find_lite_medsam_weights", "load_sam_checkpoint", "normalize_volume",
    "postprocess_logits", "predict_with_boxes", "prepare_slice", "read_state_dict",
    "scale_boxes",
]
