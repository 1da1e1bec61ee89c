"""TFDS builders: simulators (synthetic/) and the real data sets, one folder each."""

from tfdebias.datasets import synthetic  # noqa: F401,E402  (registers the four simulators)
from tfdebias.datasets import kuairec  # noqa: F401,E402  (registers the real data set kuairec)
from tfdebias.datasets import wechat_channels  # noqa: F401,E402  (registers wechat_channels)
from tfdebias.datasets import tiktok_icme19  # noqa: F401,E402  (registers tiktok_icme19)
from tfdebias.datasets import amazon_reviews  # noqa: F401,E402  (registers amazon_reviews)
from tfdebias.datasets import huawei_digix22  # noqa: F401,E402  (registers huawei_digix22)
