import pytest

from tests.app.conftest import png_bytes
from tests.conftest import SHIPPED

pytestmark = pytest.mark.skipif(not SHIPPED.exists(), reason=f"no shipped checkpoint at {SHIPPED}")


def test_shipped_model_reads_200_mnist_digits_over_http(make_client, mnist_root):
    from training.data import load_split

    client = make_client(checkpoints=[SHIPPED])
    test = load_split(mnist_root, train=False)
    right = 0
    for i in range(200):
        r = client.post("/v1/predict", content=png_bytes(test.images[i].numpy()), headers={"content-type": "image/png"})
        assert r.status_code == 200
        right += r.json()["digit"] == int(test.labels[i])
    assert right >= 196, f"{right}/200 right"
