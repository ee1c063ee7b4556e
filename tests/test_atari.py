"""Atari: the standard preprocessing from the config's env_wrappers, a lost life ending the training episode only,
and evaluation playing whole games at their raw score. (The configs themselves run in tests/test_configs.py.)"""
import numpy as np
import yaml

from lightning_pg.envs import make_env
from tests.helpers import REPO

CONFIG = yaml.safe_load((REPO / "configs" / "ppo_atari.yaml").read_text())["model"]["init_args"]


def wrapper_names(env):
    names = []
    while hasattr(env, "env"):
        names.append(type(env).__name__)
        env = env.env
    return names


def test_training_envs_end_an_episode_per_life_and_clip_rewards_evaluation_envs_play_whole_games():
    train = make_env(CONFIG["env_id"], CONFIG["env_kwargs"], CONFIG["env_wrappers"], training=True)
    evaluation = make_env(CONFIG["env_id"], CONFIG["env_kwargs"], CONFIG["env_wrappers"], training=False)
    assert {"EpisodicLife", "ClipReward"} <= set(wrapper_names(train))
    assert not {"EpisodicLife", "ClipReward"} & set(wrapper_names(evaluation))
    assert train.observation_space.shape == evaluation.observation_space.shape == (4, 84, 84)

    # a training episode ends at the first lost life; the reset after it continues the same game
    obs, _ = train.reset(seed=0)
    ale = train.unwrapped.ale
    steps, terminated = 0, False
    while not terminated:
        obs, reward, terminated, truncated, _ = train.step(3)  # LEFT: the ball gets past the paddle
        assert reward in (0.0, 1.0)
        steps += 1
        assert steps < 5000
    assert ale.lives() == 4  # one life lost, the game not over
    train.reset()
    assert ale.lives() == 4 and not ale.game_over()  # the same game goes on
    train.close()

    # an evaluation episode is a whole game: all five lives, the ball launched again after each (FIRE)
    evaluation.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, _ = evaluation.step(3)
        done = terminated or truncated
        steps += 1
        assert steps < 20000, "the ball was not launched again after a lost life"
    assert evaluation.unwrapped.ale.lives() == 0
    evaluation.close()


def test_stacked_frames_are_channels_first_and_the_cnn_reads_them_so():
    import torch

    from lightning_pg.networks import NatureCNN

    env = make_env(CONFIG["env_id"], CONFIG["env_kwargs"], CONFIG["env_wrappers"])
    obs, _ = env.reset(seed=0)
    env.close()
    cnn = NatureCNN(env.observation_space)
    assert cnn.channels_first and cnn.conv[0].in_channels == 4
    frames = torch.as_tensor(np.stack([obs, obs]))
    assert cnn(frames).shape == (2, 512)
