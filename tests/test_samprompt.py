"SAM's box prompt without weights: the mask post-processing's geometry, the fallback rule, options."
import pytest
import torch

from boxrefine.samprompt import (SamPrompt, fallback_reasons, mask_boxes, prompt_boxes,
                                 rectangle_logits, tight_boxes, upscale_masks)


def input_size(h: int, w: int) -> tuple[int, int]:
    from segment_anything_hq.utils.transforms import ResizeLongestSide
    return ResizeLongestSide.get_preprocess_shape(h, w, 1024)


@pytest.mark.parametrize('h, w, box', [
    (240, 320, [40, 30, 200, 170]),        # the demo's images
    (240, 320, [300, 200, 318, 239]),      # small, at the corner
    (900, 240, [10, 100, 230, 850]),       # tall
    (900, 240, [50, 20, 90, 60]),
    (512, 512, [100, 100, 400, 300]),      # square
    (300, 1400, [600, 50, 1390, 290]),     # wide
    (300, 1400, [3, 7, 200, 150]),
    (4000, 3000, [1000, 1200, 2500, 3900]),  # a 12-megapixel photo: masks upscaled in chunks
])
def test_known_mask_comes_back_to_its_box(h, w, box):
    "A rectangle drawn in SAM's input frame, at 256x256, post-processed: its box within a pixel."
    # the demo's, tall, square and wide images are smaller than SAM's frame: one image pixel
    size = input_size(h, w)
    box_1024 = prompt_boxes(torch.tensor([box], dtype=torch.float64), (h, w))[0]
    drawn = torch.tensor([round(float(v)) for v in box_1024], dtype=torch.float64)
    expected = drawn * torch.tensor([w / size[1], h / size[0]] * 2)
    logits = rectangle_logits(box_1024, size).repeat(3, 1, 1, 1)
    got, area = mask_boxes(logits, size, (h, w), max_pixels=2 * h * w)   # two masks at a time
    assert (area > 0).all()
    pixel = max(1.0, w / size[1])     # a pixel of the image, or of SAM's frame when that is coarser
    assert (got - expected).abs().max() <= pixel, (got[0].tolist(), expected.tolist())
    assert (got - torch.tensor(box, dtype=torch.float64)).abs().max() <= pixel + w / size[1]


def test_masks_padding_is_cropped():
    "Mask logits in the padding (below a wide image's input) never reach the image."
    size = input_size(240, 320)                    # (768, 1024): rows 768.. are padding
    logits = torch.full((1, 1, 256, 256), -10.0)
    logits[..., 200:, :] = 10.0                    # only the padding says 'mask'
    _, area = mask_boxes(logits, size, (240, 320))
    assert area.tolist() == [0]
    assert upscale_masks(logits, size, (240, 320)).shape == (1, 1, 240, 320)


def test_tight_boxes_and_fallbacks():
    m = torch.zeros(2, 5, 7, dtype=torch.bool)
    m[0, 1:3, 2:6] = True
    boxes, area = tight_boxes(m)
    assert boxes.tolist() == [[2, 1, 6, 3], [0, 0, 0, 0]] and area.tolist() == [8, 0]
    inp = torch.tensor([[2., 1, 6, 3]] * 2)
    assert fallback_reasons(boxes, area, inp, SamPrompt()) == ['small_mask', 'empty_mask']
    assert fallback_reasons(boxes, area, inp, SamPrompt(min_mask_area=8)) == [None, 'empty_mask']
    far = torch.tensor([[0., 0, 300, 300]])
    assert fallback_reasons(far, torch.tensor([90000]), inp[:1], SamPrompt()) == ['far_from_box']


@pytest.mark.parametrize('kwargs, message', [({'min_mask_area': -1}, 'min_mask_area'),
                                             ({'min_mask_area': 2.5}, 'min_mask_area'),
                                             ({'min_box_iou': 1.0}, 'min_box_iou')])
def test_bad_prompt_options(kwargs, message):
    with pytest.raises(ValueError, match=message): SamPrompt(**kwargs)
