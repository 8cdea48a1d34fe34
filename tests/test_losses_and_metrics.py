import numpy as np
import segmentation_models_pytorch as smp
import torch

from fl_mia.losses import segmentation_loss, soft_dice_loss_per_image
from fl_mia.segmentation_metrics import confusion_counts, summarize


def test_per_image_loss_averages_to_the_batch_loss():
    torch.manual_seed(0)
    logits, masks = torch.randn(5, 1, 16, 16), (torch.rand(5, 16, 16) > 0.7).long()
    per_image = segmentation_loss(logits, masks, reduction="none")
    assert per_image.shape == (5,)
    assert torch.allclose(per_image.mean(), segmentation_loss(logits, masks))


def test_per_image_dice_is_independent_of_batch_companions():
    torch.manual_seed(1)
    logits, masks = torch.randn(4, 3, 16, 16), torch.randint(0, 3, (4, 16, 16))
    alone = soft_dice_loss_per_image(logits[:1], masks[:1])
    together = soft_dice_loss_per_image(logits, masks)[:1]
    assert torch.allclose(alone, together)


def test_soft_dice_matches_smp_on_a_single_image():
    torch.manual_seed(2)
    logits, masks = torch.randn(1, 1, 16, 16), (torch.rand(1, 16, 16) > 0.5).long()
    # smp writes Dice as (tp + s) / (tp + (fp + fn) / 2 + s): its smooth s is half of ours.
    smp_loss = smp.losses.DiceLoss("binary", from_logits=True, smooth=0.5)(logits, masks[:, None])
    assert torch.allclose(soft_dice_loss_per_image(logits, masks)[0], smp_loss, atol=1e-5)


def test_confident_correct_prediction_has_near_zero_loss():
    masks = torch.zeros(2, 8, 8, dtype=torch.long)
    masks[:, 2:5, 2:5] = 1
    logits = (masks.float() * 2 - 1)[:, None] * 20
    assert segmentation_loss(logits, masks, reduction="none").max() < 0.01


def test_dice_iou_by_hand():
    masks = torch.zeros(3, 8, 8, dtype=torch.long)
    masks[0, 2:4, 2:4] = 1  # 4 pixels, half found
    masks[1, 0:2, 0:2] = 1  # 4 pixels, missed
    predicted = torch.zeros_like(masks)
    predicted[0, 2:4, 2:3] = 1
    tp, fp, fn = confusion_counts(predicted, masks, num_classes=1)
    scores = summarize(tp, fp, fn, (masks.flatten(1) > 0).any(1).numpy())
    assert np.isclose(scores["dice"], (2 * 2 / 6 + 0 + 1) / 3)  # empty/empty counts as 1
    assert np.isclose(scores["iou"], (2 / 4 + 0 + 1) / 3)
    assert np.isclose(scores["dice_pooled"], 4 / 10)
    assert np.isclose(scores["dice_lesion_images"], (2 / 3 + 0) / 2)


def test_multiclass_dice_leaves_background_out():
    masks = torch.zeros(1, 4, 4, dtype=torch.long)
    masks[0, :2] = 1
    masks[0, 3, 3] = 2
    tp, fp, fn = confusion_counts(masks.clone(), masks, num_classes=3)
    assert tp.shape == (1, 2)
    assert summarize(tp, fp, fn, np.array([True]))["dice"] == 1.0
