"""AMID in plain Keras: a sequential backbone + MIM + the doubly robust estimator
(run by tests/test_examples.py; about a minute on 2 cores).

The simulator is generated in memory here to keep the example fast;
``tfdebias.data.load("cross_domain_sequences/small")`` gives the same columns from TFDS.
"""
import keras

import tfdebias
from tfdebias.data import samplers
from tfdebias.datasets.synthetic import cross_domain_sequences as cds
from tfdebias.methods import amid

params = {"n_users": 1500, "n_items_a": 300, "n_items_b": 200, "max_len": 10}
splits, schema = cds.simulate(params), cds.schema(params)   # train / unobserved / valid / test
keras.utils.set_random_seed(0)
model = tfdebias.models.build("amid", schema, backbone="gru4rec", embedding_dim=16)

sampler = samplers.NegativeSampler(samplers.domain_item_pools(splits, model.histories))
observed = samplers.add_negatives(  # L_c stream: observed users, 1 fresh negative per epoch
    tfdebias.data.make_dataset(splits["train"], schema, batch_size=256, shuffle=True), sampler)
everyone = amid.make_dr_dataset(splits["train"], splits["unobserved"], schema, sampler)  # L_r over D

model(next(iter(observed))[0])          # build every sub-layer before the optimizers
model.build_heads()
model.set_user_bank(splits["train"])    # the N sampled users of Eq. (6)
model.compile(optimizer=keras.optimizers.Adam(3e-3))
model.dr_optimizer = keras.optimizers.Adam(3e-4)  # eta' of Algorithm 1
for epoch in range(2):                  # Algorithm 1: L_c (Eq. 13), then L_r (Eq. 15)
    model.set_phase(1)
    model.fit(observed, epochs=1, verbose=2)
    model.set_phase(2)
    model.fit(everyone, epochs=1, verbose=2)
print(amid.ranking_protocol(model, splits, schema, n_neg=99, split_names=("test",)))
