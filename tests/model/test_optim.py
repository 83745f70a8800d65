import pytest

from fastnet.errors import ConfigError
from fastnet.model.optim import check_cyclic, cyclic_lr


def test_cyclic_lr_is_triangular():
    lo, hi, n_s = 1e-5, 1e-1, 500
    assert cyclic_lr(0, lo, hi, n_s) == lo
    assert cyclic_lr(n_s, lo, hi, n_s) == pytest.approx(hi)
    assert cyclic_lr(2 * n_s, lo, hi, n_s) == pytest.approx(lo)
    assert cyclic_lr(n_s // 2, lo, hi, n_s) == pytest.approx((lo + hi) / 2)
    assert cyclic_lr(3 * n_s // 2, lo, hi, n_s) == pytest.approx((lo + hi) / 2)
    # periodic with period 2 n_s
    assert cyclic_lr(2 * n_s + 123, lo, hi, n_s) == pytest.approx(cyclic_lr(123, lo, hi, n_s))


@pytest.mark.parametrize("args", [(0.2, 0.1, 10, 1), (1e-5, 0.1, 0, 1), (1e-5, 0.1, 10, 0), (-1.0, 0.1, 10, 1)])
def test_impossible_schedules_are_refused(args):
    with pytest.raises(ConfigError):
        check_cyclic(*args)
