import torch
import torch.nn.functional as F

from robench.defenses import DEFENSES


def test_softmax_loss_is_cross_entropy_of_linear_head():
    defense = DEFENSES.get("softmax").for_dataset("mnist")
    head = defense.make_head(8, 10)
    z = torch.randn(5, 8)
    y = torch.randint(0, 10, (5,))
    terms = defense.loss(head, z, y)
    torch.testing.assert_close(terms.total, F.cross_entropy(head(z), y))
    assert defense.params() == {}
