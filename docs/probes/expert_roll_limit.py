"""The ALOHA transfer-cube expert with a given forearm-roll range in its plan pass: plans and
replays seeds 0..N-1 without rendering and prints the expert's successes and the spread of the
right forearm-roll (10) and wrist-rotation (12) labels, and of their sum (what the camera sees).
Usage: .venv/bin/python docs/probes/expert_roll_limit.py LIMIT_RAD N"""
import sys, time, numpy as np, gymnasium as gym
import components.envs
import components.envs.aloha_expert as ae
lim = float(sys.argv[1]); n = int(sys.argv[2])
ae.PLAN_FOREARM_ROLL_LIMIT[ae.TRANSFER_CUBE] = lim
env = gym.make("vla_stack/AlohaTransferCube-v0", cameras=("top",), image_size=(8, 8), render_quality="flat")
expert = ae.AlohaExpert(); acts = []; ok_n = 0; t0 = time.time()
for seed in range(n):
    a = np.array(expert.plan(env, seed)); env.reset(seed=seed); ok = False
    for x in a:
        _, _, term, trunc, info = env.step(x); ok = ok or info["is_success"]
        if term or trunc: break
    ok_n += ok; acts.append(a)
A = np.concatenate(acts)
print(f"limit {lim}: expert {ok_n}/{n}; roll(10) std {A[:,10].std():.3f} range [{A[:,10].min():.2f},{A[:,10].max():.2f}]; rot(12) std {A[:,12].std():.3f} 1-99% [{np.percentile(A[:,12],1):.2f},{np.percentile(A[:,12],99):.2f}]; sum std {(A[:,10]+A[:,12]).std():.3f}; eps passing 2.5: {sum(np.abs(a[:,12]).max()>2.5 for a in acts)}; {time.time()-t0:.0f}s")
