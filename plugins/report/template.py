"""The report's Jinja template (kept in Python so it ships with the package without data files)."""

REPORT_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Run report: {{ run_name }}</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px; color: #111827; padding: 0 1rem; }
  h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #e5e7eb; padding-bottom: 0.3rem; margin-top: 2.2rem; }
  .muted { color: #6b7280; } .pass { color: #15803d; font-weight: bold; } .fail { color: #b91c1c; font-weight: bold; }
  .cards { display: flex; flex-wrap: wrap; gap: 0.8rem; margin: 1rem 0; }
  .card { border: 1px solid #e5e7eb; border-radius: 8px; padding: 0.6rem 1rem; min-width: 9rem; }
  .card .value { font-size: 1.3rem; font-weight: 600; } .card .label { color: #6b7280; font-size: 0.8rem; }
  table { border-collapse: collapse; width: 100%; margin: 0.6rem 0; font-size: 0.9rem; }
  th, td { border: 1px solid #e5e7eb; padding: 0.35rem 0.6rem; text-align: left; vertical-align: top; }
  th { background: #f9fafb; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
  pre { white-space: pre-wrap; margin: 0; font-size: 0.85rem; }
  .two { display: grid; grid-template-columns: 1fr 1fr; gap: 1.2rem; }
</style>
</head>
<body>
<h1>Run report: {{ run_name }}</h1>
<p class="muted">{{ run_dir }}</p>
{% set status = evaluation.status %}
<div class="cards">
  <div class="card"><div class="label">base model</div><div class="value">{{ training.base_model or training_config.model_name_or_path or "-" }}</div></div>
  <div class="card"><div class="label">method</div><div class="value">{{ training.method or training_config.training_method or "-" }}</div></div>
  <div class="card"><div class="label">steps</div><div class="value">{{ training.steps | num }}</div></div>
  <div class="card"><div class="label">final train loss</div><div class="value">{{ training.train_loss | num }}</div></div>
  <div class="card"><div class="label">validation loss (final model)</div><div class="value">{{ training.final_eval_loss | num }}</div></div>
  {% if training.best_eval_step is not none and training.best_eval_step != training.steps %}<div class="card"><div class="label">lowest validation loss (step {{ training.best_eval_step }}, not exported)</div><div class="value">{{ training.best_eval_loss | num }}</div></div>{% endif %}
  <div class="card"><div class="label">tokens / s (training)</div><div class="value">{{ training.tokens_per_second | num }}</div></div>
  <div class="card"><div class="label">evaluation</div><div class="value {{ 'pass' if status == 'PASS' else 'fail' if status == 'FAIL' else '' }}">{{ status or "not run" }}</div></div>
</div>

<h2 id="loss">Loss curves</h2>
{{ loss_chart | safe }}
<p class="muted">Validation loss: the mean cross-entropy per trained token over the held-out rows, measured during training on the weights of that step, in the training precision. The final model is the last step's weights, and the evaluation's loss below is the same measure of it, reloaded (in the evaluation's precision). Training loss: the same measure on the training rows, averaged over the steps since the previous point, with dropout.</p>
{% if reward_chart %}
<h3 id="rewards">Preference rewards</h3>
{{ reward_chart | safe }}
{% if reward_accuracy_chart %}{{ reward_accuracy_chart | safe }}{% endif %}
<p class="muted">The implicit reward of an answer is beta x (its log-probability under the model being trained - under the reference), summed over its answer tokens; margin: chosen - rejected (for KTO: desirable and undesirable completions). Reward accuracy: the share of pairs whose chosen answer has the higher reward. Training points average the steps since the previous one; validation points are the held-out pairs.</p>
{% endif %}

<h2 id="evaluation">Evaluation</h2>
{% set preference = evaluation.preference %}
{% if preference %}
<p>Held-out {{ 'pairs' if preference.task == 'preference' else 'completions' }}: {{ preference.examples }}. Each answer is scored by its {{ preference.measure }}; the starting point is the model before {{ preference.loss or 'preference' }} training (the base, with the adapter disabled for an adapter).</p>
{% endif %}
{% if metric_rows %}
<table id="{{ 'preference-table' if preference else 'metrics-table' }}">
  <tr><th>metric</th><th>{{ 'tuned' if preference else 'fine-tuned' }}</th><th>{{ 'start' if preference else 'base' }}</th></tr>
  {% for name, tuned, base in metric_rows %}<tr><td>{{ name }}</td><td class="num">{{ tuned | num }}</td><td class="num">{{ base | num }}</td></tr>{% endfor %}
</table>
{% if reward_rows %}
<table id="reward-table">
  <tr><th>tuned vs start (implicit reward)</th><th>value</th></tr>
  {% for name, value in reward_rows %}<tr><td>{{ name }}</td><td class="num">{{ value | num }}</td></tr>{% endfor %}
</table>
{% endif %}
{% for name, value in (evaluation.improvement or {}).items() %}<p>{{ name.replace('_', ' ') }} over the base model: <b>{{ '%.1f%%' % (100 * value) }}</b></p>{% endfor %}
{% if evaluation.thresholds %}
<table id="thresholds-table">
  <tr><th>threshold</th><th>limit</th><th>value</th><th>result</th></tr>
  {% for check in evaluation.thresholds %}<tr><td>{{ check.name }}</td><td class="num">{{ check.limit | num }}</td><td class="num">{{ check.value | num }}</td><td class="{{ 'pass' if check.passed else 'fail' }}">{{ check.message }}</td></tr>{% endfor %}
</table>
{% endif %}
{% else %}<p class="muted">No evaluation in this run.</p>{% endif %}

<h2 id="samples">Sample generations</h2>
{% if evaluation.samples %}
<table id="samples-table">
  {% if preference %}<tr><th>prompt</th><th>chosen answer</th><th>tuned</th><th>start</th></tr>
  {% else %}<tr><th>prompt</th><th>reference</th><th>fine-tuned</th><th>base</th></tr>{% endif %}
  {% for s in evaluation.samples %}<tr><td><pre>{{ s.prompt }}</pre></td><td><pre>{{ s.reference }}</pre></td><td><pre>{{ s.fine_tuned | answer }}</pre></td><td><pre>{{ s.base | answer }}</pre></td></tr>{% endfor %}
</table>
{% else %}<p class="muted">No samples.</p>{% endif %}

<h2 id="behaviour">Behaviour checks</h2>
{% set behaviour = evaluation.behaviour %}
{% macro verdict(result) %}{% if result %}<pre>{{ result.answer | answer }}</pre><div class="{{ 'pass' if result.passed else 'fail' }}">{{ 'passed' if result.passed else 'failed: ' ~ result.failed | join('; ') }}</div>{% else %}-{% endif %}{% endmacro %}
{% if behaviour %}
<p>Held-out prompts of <code>{{ behaviour.checks_file }}</code>, answered greedily (at most {{ behaviour.max_new_tokens }} tokens).
Passed: fine-tuned <b>{{ behaviour.pass_rate | percent }}</b>{% if behaviour.base_pass_rate is not none %}, base <b>{{ behaviour.base_pass_rate | percent }}</b>{% endif %}.</p>
<table id="behaviour-table">
  <tr><th>prompt</th><th>a passing answer</th><th>fine-tuned</th><th>base</th></tr>
  {% for row in behaviour.prompts %}<tr><td><pre>{{ row.check.prompt }}</pre>{% if row.check.system %}<div class="muted">system: {{ row.check.system }}</div>{% endif %}</td><td>{{ row.check | criteria }}</td><td>{{ verdict(row.fine_tuned) }}</td><td>{{ verdict(row.base) }}</td></tr>{% endfor %}
</table>
{% else %}<p class="muted">No behaviour checks in this run (evaluation.behaviour_checks).</p>{% endif %}

<h2 id="export">Export verification</h2>
{% if verification %}
<table id="export-table">
  <tr><th>artefact</th><th>check</th><th>top-1 agreement</th><th>max |logit diff|</th><th>greedy match</th><th>passed</th><th>notes</th></tr>
  {% for row in verification %}<tr><td>{{ row.artefact }}</td><td>{{ row.check }}</td><td class="num">{{ row.top1_agreement | num }}</td><td class="num">{{ row.max_abs_logit_diff | num }}</td><td class="num">{{ row.greedy_match | num }}</td><td class="{{ 'pass' if row.passed else 'fail' if row.passed is false else '' }}">{{ row.passed | num }}</td><td>{{ row.note or '' }}</td></tr>{% endfor %}
</table>
{% else %}<p class="muted">Nothing exported in this run.</p>{% endif %}

<h2 id="inference">Inference benchmark</h2>
{% if inference.models %}
<table id="inference-table">
  <tr><th>model</th><th>kind</th><th>device</th><th>load s</th><th>tokens/s</th><th>vs base</th><th>peak memory</th><th>first answer</th></tr>
  {% for r in inference.models %}<tr><td>{{ r.name }}</td><td>{{ r.kind }}</td><td>{{ r.device }}</td><td class="num">{{ r.load_seconds | num }}</td><td class="num">{{ r.tokens_per_second | num }}</td><td class="num">{{ r.speed_vs_base | num }}</td><td class="num">{{ r.peak_memory_bytes | bytes }}</td><td><pre>{{ r.sample }}</pre></td></tr>{% endfor %}
</table>
{% if inference.behaviour %}
<p>The {{ inference.behaviour.checks }} behaviour checks through each model, greedily (at most {{ inference.behaviour.max_new_tokens }} tokens); agreement is with the fine-tuned model's answers in the evaluation.</p>
<table id="inference-behaviour-table">
  <tr><th>model</th><th>prompt format</th><th>checks passed</th><th>answers identical to the fine-tuned model's</th><th>first {{ inference.behaviour.agreement_words }} words agree</th></tr>
  {% for r in inference.models if r.behaviour %}<tr><td>{{ r.name }}</td><td>{{ r.behaviour.chat_template }}</td><td class="num">{{ r.behaviour.pass_rate | percent }}</td><td class="num">{{ r.behaviour.identical_rate | percent }}</td><td class="num">{{ r.behaviour.first_words_rate | percent }}</td></tr>{% endfor %}
</table>
{% endif %}
{% for note in inference.skipped or [] %}<p class="muted">Skipped {{ note }}</p>{% endfor %}
{% else %}<p class="muted">No inference test in this run.</p>{% endif %}

<div class="two">
<div>
<h2 id="config">Configuration</h2>
<table id="config-table">{% for key, value in training_config.items() %}<tr><td>{{ key }}</td><td>{{ value | num }}</td></tr>{% endfor %}</table>
</div>
<div>
<h2 id="dataset">Dataset</h2>
<table id="dataset-table">{% for key, value in dataset_stats + token_stats %}<tr><td>{{ key }}</td><td class="num">{{ value | num }}</td></tr>{% endfor %}</table>
{% if mixture %}
<h3>Mixture of sources, by {{ mixture.mix_by }}</h3>
{% if not mixture.realised %}<p class="muted">The data was not prepared in this run: the targets only.</p>{% endif %}
<table id="mixture-table">
  <tr><th>source</th><th>target share</th><th>rows (passes over its own)</th><th>share of rows</th><th>trained tokens</th><th>share of trained tokens</th></tr>
  {% for name, s in mixture.sources.items() %}<tr><td>{{ name }}</td><td class="num">{{ s.target_share | share }}</td>{% if mixture.realised %}<td class="num">{{ s.rows | num }} ({{ s.passes | num }})</td><td class="num">{{ s.share_rows | share }}</td><td class="num">{{ s.trained_tokens | num }}</td><td class="num">{{ s.share_tokens | share }}</td>{% else %}<td colspan="4" class="muted">-</td>{% endif %}</tr>{% endfor %}
</table>
{% endif %}
</div>
</div>

<h2 id="timings">Timings</h2>
{% if timings %}
<table id="timings-table">
  <tr><th>stage</th><th>plugin</th><th>status</th><th>seconds</th></tr>
  {% for t in timings %}<tr><td>{{ t.stage }}</td><td>{{ t.plugin }}</td><td>{{ t.status }}</td><td class="num">{{ t.seconds | num }}</td></tr>{% endfor %}
</table>
{% else %}<p class="muted">No timings recorded (events.jsonl is absent).</p>{% endif %}
</body>
</html>
"""
