"""The TF2 trainer on SOP and single-segment ("none") data: what it parses, the loss, the metrics
it reports (only those the data has) and the export. Tiny models on fixture shards."""
import dataclasses

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
transformers = pytest.importorskip("transformers")

import keras  # noqa: E402

from pipeline import schema  # noqa: E402
from tests.trainer import tf_fixtures as fx  # noqa: E402
from trainer import config as cfg  # noqa: E402
from trainer import data_contract, metrics, run_setup  # noqa: E402
from trainer.tf2 import data as tfdata  # noqa: E402
from trainer.tf2 import hf_convert, loop  # noqa: E402
from trainer.tf2 import model as bert  # noqa: E402

SEQ, PREDS = 32, 5
CONFIG = cfg.ModelConfig(vocab_size=64, **fx.TINY)
TRAIN = cfg.TrainConfig(batch_size=4, num_train_steps=4, learning_rate=1e-2, warmup_steps=1,
                        log_every=2, checkpoint_every=4, eval_every=4, eval_steps=2,
                        shuffle_buffer=16, mixed_precision="fp32")
FROZEN = ("bert.pooler.", "cls.seq_relationship.")


def make_data(path, task, seed):
    return fx.make_data_dir(str(path), num_instances=24, num_shards=2, seed=seed,
                            next_sentence=task)


@pytest.fixture(scope="module", params=["sop", "none"])
def task_fit(request, tmp_path_factory):
    """4 steps with held-out data and an export, on data of one sentence task. The "none" run
    stops after 2 and resumes: its checkpoint holds the frozen pooler and NSP head, which have
    no optimizer slots, and must restore all the same."""
    task = request.param
    root = tmp_path_factory.mktemp(f"tf_{task}")
    data = data_contract.load_data_dir(make_data(root / "train", task, 3), CONFIG)
    held_out = data_contract.load_data_dir(make_data(root / "eval", task, 4), CONFIG)
    run = run_setup.Run(model_config=CONFIG, train_config=TRAIN, data=data, eval_data=held_out,
                        output_dir=str(root / "run"), export_hf=str(root / "hf"))
    if task == "none":
        stopped = loop.fit(dataclasses.replace(run, stop_at_step=2), tf.distribute.get_strategy())
        assert stopped.step == 2 and stopped.trainer.manager.latest_checkpoint
    return task, root, loop.fit(run, tf.distribute.get_strategy())


def test_metrics_jsonl_holds_exactly_the_task_metrics(task_fit, task_metrics):
    task, root, result = task_fit
    task_metrics(str(root / "run" / metrics.METRICS_FILE), task, result.eval)


@pytest.mark.parametrize("task_fit", ["none"], indirect=True)
def test_none_trains_all_but_pooler_and_nsp_head_and_exports_a_whole_model(task_fit):
    _, root, result = task_fit
    keras.utils.set_random_seed(TRAIN.seed)  # the Trainer's initial weights
    fresh = hf_convert.export_tensors(bert.build_model(CONFIG, max_seq_length=SEQ,
                                                       max_predictions_per_seq=PREDS))
    trained = hf_convert.export_tensors(result.trainer.model)
    for name, value in fresh.items():
        if name.startswith(FROZEN):
            np.testing.assert_array_equal(trained[name], value, err_msg=name)
    assert not np.array_equal(trained["bert.embeddings.word_embeddings.weight"],
                              fresh["bert.embeddings.word_embeddings.weight"])
    hf = str(root / "hf")
    _, info = transformers.BertForPreTraining.from_pretrained(hf, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert isinstance(transformers.AutoModelForMaskedLM.from_pretrained(hf),
                      transformers.BertForMaskedLM)


def test_single_segment_records_parse_without_a_label_and_train_masked_lm_only(tmp_path):
    spec = data_contract.load_data_dir(make_data(tmp_path / "none", "none", 5), CONFIG)
    shards = tfdata.host_shards(spec.paths(schema.TFRECORD_DIR), spec.sizes(schema.TFRECORD_DIR))
    batch = next(iter(tfdata.eval_dataset(shards, batch_size=4, max_seq_length=SEQ,
                                          max_predictions_per_seq=PREDS,
                                          next_sentence=spec.next_sentence)))
    assert schema.LABEL_FEATURE not in batch
    assert int(tf.reduce_sum(batch["segment_ids"])) == 0  # one segment
    model = bert.build_model(CONFIG, max_seq_length=SEQ, max_predictions_per_seq=PREDS,
                             next_sentence="none")
    frozen = {id(v) for layer in (model.backbone.get_layer("pooled_dense"), model.nsp_head)
              for v in layer.weights}
    assert not frozen & {id(v) for v in model.trainable_variables} and len(frozen) == 4
    sums = bert.loss_sums(model(batch), batch, "none")
    assert tuple(sums) == metrics.sum_keys("none")
    loss = bert.training_loss(sums, global_mlm_weight=sums["mlm_weight_sum"],
                              global_batch_size=4)
    assert float(loss) == pytest.approx(metrics.finish(sums, "none")["loss"], rel=1e-6)
    # the data's manifest decides the spec: reading it as NSP data fails loudly
    with pytest.raises(tf.errors.InvalidArgumentError, match=schema.LABEL_FEATURE):
        next(iter(tfdata.eval_dataset(shards, batch_size=4, max_seq_length=SEQ,
                                      max_predictions_per_seq=PREDS, next_sentence="nsp")))
