"""The ALOHA transfer-cube expert with a given forearm-roll range in its plan pass: records seeds
0..N-1 with `AlohaExpert.record` (as `collect` does, without rendering) and prints the expert's
successes and the spread of the recorded right forearm-roll (10) and wrist-rotation (12) labels,
and of their sum (what the camera sees).
Usage: .venv/bin/python docs/probes/expert_roll_limit.py LIMIT_RAD N"""
import sys, time, numpy as np, gymnasium as gym
import components.envs
import components.envs.aloha_expert as ae

lim, n = float(sys.argv[1]), int(sys.argv[2])
ae.PLAN_FOREARM_ROLL_LIMIT[ae.TRANSFER_CUBE] = lim
env_id = "vla_stack/AlohaTransferCube-v0"
env = gym.make(env_id, cameras=("top",), image_size=(8, 8), render_quality="flat")
expert, t0 = ae.AlohaExpert(), time.time()
demos = [expert.record(env, seed) for seed in range(n)]
A = np.concatenate([d.frames["action"] for d in demos])
roll, rot = A[:, 10], A[:, 12]
print(f"limit {lim}: expert {sum(d.success for d in demos)}/{n}; "
      f"roll(10) std {roll.std():.3f} range [{roll.min():.2f},{roll.max():.2f}]; "
      f"rot(12) std {rot.std():.3f} 1-99% [{np.percentile(rot, 1):.2f},{np.percentile(rot, 99):.2f}]; "
      f"sum std {(roll + rot).std():.3f}; eps passing 2.5: {sum(np.abs(d.frames['action'][:, 12]).max() > 2.5 for d in demos)}; "
      f"{time.time() - t0:.0f}s")
