"""Where transformers puts a composite config's sub-configs when LMDeploy searches it.

LMDeploy finds ``quant_method`` with a depth-first search over ``AutoConfig.from_pretrained(...).to_dict()``.
The order of that dict is the order in which the config class set its attributes, not the file's: a
composite class (one with ``sub_configs``: ``text_config``, ``vision_config``, ...) sets its sub-configs
either before everything read from the file ("first") or after it ("last"). A config carrying two
different ``quant_method`` values (one of them ``smooth_quant``) gets its backend from that order.

Read from the transformers each era of LMDeploy answers with, by building every ``CONFIG_MAPPING`` class
that has ``sub_configs`` with a ``quantization_config`` and reading ``to_dict()``'s key order:
- transformers 5.17.0 (LMDeploy 0.12.2 and later): all 211 such classes set their sub-configs first;
- transformers 4.57.1 (LMDeploy before 0.12.2; 0.7.3's 4.51.3 is assumed alike): 50 first, 42 last.
  Qwen2-VL and its kin copy ``text_config``'s quantization_config over the top-level one there, which
  reads as ``text_config`` first.
Classes that could not be built without extra packages or files are absent: their configs keep file
order, as do configs whose class is remote code (``auto_map.AutoConfig``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

_T5_FIRST: dict[tuple[str, ...], tuple[str, ...]] = {  # transformers 5.17.0
    ('text_config', 'vision_config'): (
        'aimv2', 'align', 'altclip', 'blip', 'bridgetower', 'chinese_clip', 'clip', 'clipseg',
        'cohere_compass', 'cosmos3_edge', 'cosmos3_omni', 'deepseek_vl', 'diffusion_gemma',
        'ernie4_5_vl_moe', 'exaone4_5', 'florence2', 'gemma3', 'glm46v', 'glm4v', 'glm4v_moe', 'glm5_next',
        'glm_ocr', 'glmga', 'groupvit', 'hunyuan_vl', 'kimi_k25', 'kosmos-2', 'kosmos-2.5', 'metaclip_2',
        'minicpmv4_6', 'modernvbert', 'muse_glimmer', 'owlv2', 'owlvit', 'paddleocr_vl', 'pix2struct',
        'pp_formulanet', 'qwen2_5_vl', 'qwen2_vl', 'qwen3_5', 'qwen3_5_moe', 'qwen3_vl', 'qwen3_vl_moe',
        'qwen4_exp', 'shieldgemma2', 'siglip', 'siglip2', 't5gemma2_encoder', 'tipsv2', 'video_llama_3',
        'videoprism', 'xclip',
    ),
    ('backbone_config',): (
        'chmv2', 'conditional_detr', 'd_fine', 'dab-detr', 'deformable_detr', 'deimv2', 'depth_anything',
        'detr', 'dpt', 'lw_detr', 'mask2former', 'oneformer', 'pp_doclayout_v3', 'pp_ocrv5_mobile_det',
        'pp_ocrv5_mobile_rec', 'pp_ocrv5_server_det', 'pp_ocrv5_server_rec', 'pp_ocrv6_medium_det',
        'pp_ocrv6_small_det', 'pp_ocrv6_small_rec', 'pp_ocrv6_tiny_rec', 'prompt_depth_anything', 'rf_detr',
        'rt_detr', 'rt_detr_v2', 'sam2_vision_model', 'sam3_vision_model', 'slanet', 'table-transformer',
        'tipsv2_dpt', 'tvp', 'upernet', 'uvdoc', 'vitmatte', 'vitpose', 'zoedepth',
    ),
    ('vision_config', 'text_config'): (
        'aria', 'aya_vision', 'cohere2_vision', 'deepseek_ocr2', 'fast_vlm', 'got_ocr2', 'idefics3',
        'internvl', 'lfm2_vl', 'lighton_ocr', 'llama4', 'llava', 'llava_next', 'llava_next_video',
        'llava_onevision', 'minimax_m3_vl', 'mistral3', 'mllama', 'ovis2', 'paligemma', 'perception_lm',
        'pp_chart2table', 'qianfan_ocr', 'smolvlm', 'step3p7', 'video_llava', 'vipllava',
    ),
    ('encoder_config',): (
        'cohere_asr', 'granite_speech5_ctc', 'lasr_ctc', 'moonshine_streaming', 'nemotron3_5_asr',
        'nemotron_asr_streaming', 'parakeet_ctc', 'parakeet_rnnt', 'parakeet_tdt',
    ),
    ('audio_config', 'text_config'): (
        'audioflamingo3', 'glmasr', 'musicflamingo', 'qwen2_audio', 'qwen3_asr', 'voxtral',
        'voxtral_realtime',
    ),
    ('vision_config', 'prompt_encoder_config', 'mask_decoder_config'): (
        'edgetam_video', 'sam', 'sam2', 'sam2_video', 'sam3_tracker', 'sam3_tracker_video', 'sam_hq',
    ),
    ('text_config',): (
        'fuyu', 'gemma4_assistant', 'gemma4_unified_assistant',
    ),
    ('text_config', 'vision_config', 'audio_config'): (
        'gemma3n', 'gemma4', 'gemma4_unified',
    ),
    ('vision_config', 'qformer_config', 'text_config'): (
        'blip-2', 'instructblip', 'instructblipvideo',
    ),
    ('acoustic_model_config', 'semantic_model_config'): (
        'higgs_audio_v2_tokenizer', 'xcodec',
    ),
    ('audio_config', 'vision_config', 'text_config'): (
        'qwen2_5_omni_thinker', 'qwen3_omni_moe_thinker',
    ),
    ('backbone_config', 'text_config'): (
        'grounding-dino', 'mm-grounding-dino',
    ),
    ('encoder', 'decoder'): (
        't5gemma', 't5gemma2',
    ),
    ('encoder_config', 'decoder_config'): (
        'canary', 'dia',
    ),
    ('keypoint_detector_config',): (
        'lightglue', 'superglue',
    ),
    ('protein_encoder_config',): (
        'EvollaModel', 'evolla',
    ),
    ('semantic_model_config',): (
        'neucodec', 'xcodec2',
    ),
    ('text_config', 'audio_config'): (
        'clap', 'pe_audio',
    ),
    ('text_config', 'encoder_config', 'projector_config'): (
        'granite_speech', 'granite_speech_plus',
    ),
    ('text_config', 'vision_config', 'vq_config'): (
        'glm_image', 'janus',
    ),
    ('vision_config',): (
        'git', 'slanext',
    ),
    (
        'vision_config',
        'text_config',
        'geometry_encoder_config',
        'detr_encoder_config',
        'detr_decoder_config',
        'mask_decoder_config',
    ): (
        'sam3', 'sam3_lite_text',
    ),
    ('vlm_config',): (
        'colmodernvbert', 'colqwen2',
    ),
    ('acoustic_tokenizer_encoder_config', 'semantic_tokenizer_encoder_config', 'text_config'): (
        'vibevoice_asr',
    ),
    ('adaptor_config', 'audio_config', 'text_config'): (
        'fun_asr_nano',
    ),
    ('atom_encoder', 'structure_head', 'confidence_head', 'msa_encoder', 'lm_encoder', 'esmc_config'): (
        'esmfold2',
    ),
    ('attn_config',): (
        'mpt',
    ),
    ('attn_config', 'ffn_config'): (
        'dbrx',
    ),
    ('audio_config', 'semantic_model_config', 'text_config', 'diffusion_head_config'): (
        'vibevoice',
    ),
    ('audio_encoder_config', 'depth_decoder_config'): (
        'moshi',
    ),
    ('backbone_config', 'decoder_config'): (
        'maskformer',
    ),
    ('backbone_config', 'reading_order_config'): (
        'pp_doclayout_v2',
    ),
    ('codec_config',): (
        'kyutai_speech_to_text',
    ),
    ('dac_config',): (
        'pe_audio_encoder',
    ),
    ('depth_decoder_config', 'codec_config'): (
        'csm',
    ),
    ('detector_config', 'tracker_config'): (
        'sam3_video',
    ),
    ('dit_config', 'bigvgan_config'): (
        'qwen2_5_omni_token2wav',
    ),
    ('esmfold_config',): (
        'esm',
    ),
    ('head_config',): (
        'sapiens2',
    ),
    ('image_config', 'text_config', 'multimodal_config', 'image_codebook_config'): (
        'flava',
    ),
    ('image_model_config', 'patch_model_config', 'fov_model_config'): (
        'depth_pro',
    ),
    ('model_config', 'vocoder_config'): (
        'fastspeech2_conformer_with_hifigan',
    ),
    ('patcher_config', 'encoder_config', 'decoder_config', 'global_config'): (
        'blt',
    ),
    ('sam_config', 'encoder_config'): (
        'deepseek_ocr2_vision',
    ),
    ('semantic_config', 'coarse_acoustics_config', 'fine_acoustics_config', 'codec_config'): (
        'bark',
    ),
    ('text_config', 'audio_config', 'vision_config'): (
        'inkling_mm_model',
    ),
    ('text_config', 'backbone_config'): (
        'omdet-turbo',
    ),
    ('text_config', 'speech_config', 'decoder_config'): (
        'clvp',
    ),
    ('text_config', 'vision_config', 'high_res_vision_config'): (
        'deepseek_vl_hybrid',
    ),
    ('thinker_config', 'talker_config', 'code2wav_config'): (
        'qwen3_omni_moe',
    ),
    ('thinker_config', 'talker_config', 'token2wav_config'): (
        'qwen2_5_omni',
    ),
    ('vision_config', 'audio_config'): (
        'phi4_multimodal',
    ),
    ('vision_config', 'perceiver_config'): (
        'idefics',
    ),
    ('vision_config', 'perceiver_config', 'text_config'): (
        'idefics2',
    ),
    ('vision_config', 'text_config', 'qformer_config'): (
        'granite4_vision',
    ),
    ('vlm_config', 'dit_config'): (
        'pi0',
    ),
    ('vlm_config', 'text_config'): (
        'colpali',
    ),
    ('vq_config',): (
        'chameleon',
    ),
    ('vq_config', 'text_config'): (
        'emu3',
    ),
}

_T4_FIRST: dict[tuple[str, ...], tuple[str, ...]] = {  # transformers 4.57.1
    ('vision_config', 'text_config'): (
        'aya_vision', 'glm4v', 'got_ocr2', 'granitevision', 'idefics3', 'internvl', 'lfm2_vl', 'llama4',
        'llava', 'llava_next', 'llava_next_video', 'llava_onevision', 'mistral3', 'mllama', 'ovis2',
        'paligemma', 'perception_lm', 'qwen3_vl', 'qwen3_vl_moe', 'shieldgemma2', 'smolvlm', 'video_llava',
        'vipllava',
    ),
    ('text_config', 'vision_config'): (
        'florence2', 'gemma3', 'qwen2_5_vl', 'qwen2_vl',
    ),
    ('audio_config', 'text_config'): (
        'qwen2_audio', 'voxtral',
    ),
    ('attn_config',): (
        'mpt',
    ),
    ('attn_config', 'ffn_config'): (
        'dbrx',
    ),
    ('audio_encoder_config', 'depth_decoder_config'): (
        'moshi',
    ),
    ('decoder',): (
        'fsmt',
    ),
    ('encoder_config',): (
        'parakeet_ctc',
    ),
    ('encoder_config', 'decoder_config'): (
        'dia',
    ),
    ('keypoint_detector_config',): (
        'lightglue',
    ),
    ('model_config', 'vocoder_config'): (
        'fastspeech2_conformer_with_hifigan',
    ),
    ('patcher_config', 'encoder_config', 'decoder_config', 'global_config'): (
        'blt',
    ),
    ('perceiver_config', 'vision_config'): (
        'idefics',
    ),
    ('perceiver_config', 'vision_config', 'text_config'): (
        'idefics2',
    ),
    ('protein_encoder_config',): (
        'evolla',
    ),
    ('semantic_config', 'coarse_acoustics_config', 'fine_acoustics_config', 'codec_config'): (
        'bark',
    ),
    ('text_config',): (
        'fuyu',
    ),
    ('text_config', 'encoder_config', 'projector_config'): (
        'granite_speech',
    ),
    ('text_config', 'vision_config', 'vq_config'): (
        'janus',
    ),
    ('thinker_config', 'talker_config', 'token2wav_config'): (
        'qwen2_5_omni',
    ),
    ('vlm_config',): (
        'colqwen2',
    ),
    ('vlm_config', 'text_config'): (
        'colpali',
    ),
    ('vq_config',): (
        'chameleon',
    ),
    ('vq_config', 'text_config'): (
        'emu3',
    ),
}

_T4_LAST: dict[tuple[str, ...], tuple[str, ...]] = {  # transformers 4.57.1
    ('text_config', 'vision_config'): (
        'aimv2', 'align', 'altclip', 'blip', 'bridgetower', 'chinese_clip', 'clip', 'clipseg',
        'deepseek_vl', 'groupvit', 'kosmos-2', 'kosmos-2.5', 'metaclip_2', 'owlv2', 'owlvit', 'pix2struct',
        'siglip', 'siglip2', 'xclip',
    ),
    ('vision_config', 'prompt_encoder_config', 'mask_decoder_config'): (
        'edgetam_video', 'sam', 'sam2', 'sam2_video', 'sam_hq',
    ),
    ('vision_config', 'qformer_config', 'text_config'): (
        'blip-2', 'instructblip', 'instructblipvideo',
    ),
    ('vision_config', 'text_config'): (
        'cohere2_vision', 'glm4v_moe',
    ),
    ('acoustic_model_config', 'semantic_model_config'): (
        'xcodec',
    ),
    ('backbone_config',): (
        'sam2_vision_model',
    ),
    ('codec_config',): (
        'kyutai_speech_to_text',
    ),
    ('depth_decoder_config', 'codec_config'): (
        'csm',
    ),
    ('image_config', 'text_config', 'multimodal_config', 'image_codebook_config'): (
        'flava',
    ),
    ('image_model_config', 'patch_model_config', 'fov_model_config'): (
        'depth_pro',
    ),
    ('text_config', 'audio_config'): (
        'clap',
    ),
    ('text_config', 'speech_config', 'decoder_config'): (
        'clvp',
    ),
    ('text_config', 'vision_config', 'audio_config'): (
        'gemma3n',
    ),
    ('text_config', 'vision_config', 'high_res_vision_config'): (
        'deepseek_vl_hybrid',
    ),
    ('thinker_config', 'talker_config', 'code2wav_config'): (
        'qwen3_omni_moe',
    ),
    ('vision_config',): (
        'git',
    ),
    ('vision_config', 'audio_config'): (
        'phi4_multimodal',
    ),
}


def _flat(groups: dict[tuple[str, ...], tuple[str, ...]]) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({model_type: order for order, types in groups.items() for model_type in types})


SUBCONFIGS_FIRST: Mapping[int, Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {5: _flat(_T5_FIRST), 4: _flat(_T4_FIRST)})
"""transformers major -> model_type -> sub-config keys searched before the file's other keys."""
SUBCONFIGS_LAST: Mapping[int, Mapping[str, tuple[str, ...]]] = MappingProxyType({5: MappingProxyType({}),
                                                                              4: _flat(_T4_LAST)})
"""transformers major -> model_type -> sub-config keys searched after the file's other keys."""
