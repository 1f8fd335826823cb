"""One strings table for every label in the page: English and 中文.

`t(key, lang)` looks a key up; a missing Chinese string falls back to English, a missing key is
returned as itself (so a typo shows in the page instead of crashing it). Field labels of the
training forms come from the backends' dataclass metadata (label / label_zh), not from here.
"""
from __future__ import annotations

LANGUAGES = {"en": "English", "zh": "中文"}

STRINGS: dict[str, dict[str, str]] = {
    # header / tabs
    "title": {"en": "Finetune Studio", "zh": "微调工作室"},
    "subtitle": {
        "en": "Fine-tune language and image models from this page: SFT, reward model, RLHF, SD LoRA.",
        "zh": "在此页面微调语言与图像模型：SFT、奖励模型、RLHF、SD LoRA。",
    },
    "language": {"en": "Language / 语言", "zh": "语言 / Language"},
    "tab.environment": {"en": "Environment", "zh": "环境"},
    "tab.datasets": {"en": "Datasets", "zh": "数据集"},
    "tab.sft": {"en": "SFT", "zh": "监督微调"},
    "tab.reward": {"en": "Reward model", "zh": "奖励模型"},
    "tab.rlhf": {"en": "RLHF", "zh": "RLHF"},
    "tab.pipeline": {"en": "Pipeline", "zh": "一键流程"},
    "tab.sd_lora": {"en": "SD distill LoRA", "zh": "SD 蒸馏 LoRA"},
    "tab.jobs": {"en": "Jobs", "zh": "任务"},
    "tab.compare": {"en": "A/B compare", "zh": "A/B 对比"},
    "coming": {
        "en": "This tab is coming: see the open issues. The Environment tab works today.",
        "zh": "此标签页即将推出（见待办事项）。“环境”标签页现已可用。",
    },
    # environment tab
    "env.refresh": {"en": "Refresh", "zh": "刷新"},
    "env.system": {"en": "System", "zh": "系统"},
    "env.software": {"en": "Software", "zh": "软件"},
    "env.ds_ops": {"en": "DeepSpeed ops (as ds_report)", "zh": "DeepSpeed 算子（同 ds_report）"},
    "env.bundled": {"en": "Bundled models", "zh": "内置模型"},
    "env.prepare": {"en": "Prepare bundled models", "zh": "准备内置模型"},
    "env.prepare_log": {"en": "Preparation log", "zh": "准备日志"},
    "env.report": {"en": "Copy report", "zh": "复制报告"},
    "env.estimator": {"en": "Memory estimator", "zh": "显存估算"},
    "est.model": {"en": "Model (bundled, local folder, name like opt-1.3b, or size like 1.3B)",
                  "zh": "模型（内置、本地文件夹、名称如 opt-1.3b，或参数量如 1.3B）"},
    "est.method": {"en": "Method", "zh": "方法"},
    "est.lora_rank": {"en": "LoRA rank r", "zh": "LoRA 秩 r"},
    "est.precision": {"en": "Precision", "zh": "精度"},
    "est.zero_stage": {"en": "ZeRO stage", "zh": "ZeRO 阶段"},
    "est.offload": {"en": "CPU offload", "zh": "CPU 卸载"},
    "est.num_gpus": {"en": "GPUs per node", "zh": "每节点 GPU 数"},
    "est.num_nodes": {"en": "Nodes", "zh": "节点数"},
    "est.micro_batch": {"en": "Micro-batch per GPU", "zh": "每 GPU 微批大小"},
    "est.seq_len": {"en": "Sequence length", "zh": "序列长度"},
    "est.grad_ckpt": {"en": "Gradient checkpointing", "zh": "梯度检查点"},
    "est.target_gpu": {"en": "Compare against", "zh": "对比硬件"},
    "est.detected": {"en": "detected hardware", "zh": "检测到的硬件"},
    "est.run": {"en": "Estimate", "zh": "估算"},
    # datasets tab
    "ds.catalog": {"en": "Catalog (DeepSpeed-Chat, ColossalChat, bundled samples)",
                   "zh": "数据集目录（DeepSpeed-Chat、ColossalChat、内置样例）"},
    "ds.path": {"en": "File or folder in the data dir", "zh": "数据目录中的文件或文件夹"},
    "ds.upload": {"en": "Upload (json, jsonl, csv, tsv, parquet; several files for an image folder)",
                  "zh": "上传（json、jsonl、csv、tsv、parquet；图片文件夹可多选文件）"},
    "ds.source": {"en": "Inspecting", "zh": "当前数据"},
    "ds.kind": {"en": "Use as", "zh": "用途"},
    "ds.transform": {"en": "Row transform", "zh": "行转换"},
    "ds.mapping": {"en": "Column mapping (field ← column)", "zh": "列映射（字段 ← 列）"},
    "ds.model": {"en": "Tokenizer of model (for token lengths)", "zh": "分词器所属模型（用于统计 token 长度）"},
    "ds.max_len": {"en": "Max length (tokens)", "zh": "最大长度（token）"},
    "ds.drop_bad": {"en": "Drop rows with problems", "zh": "丢弃有问题的行"},
    "ds.drop_long": {"en": "Drop rows over max length", "zh": "丢弃超长的行"},
    "ds.data_split": {"en": "data_split (SFT,RM,RLHF)", "zh": "data_split（SFT,RM,RLHF）"},
    "ds.eval_ratio": {"en": "Eval ratio", "zh": "验证集比例"},
    "ds.seed": {"en": "Split seed", "zh": "划分种子"},
    "ds.check": {"en": "Validate", "zh": "校验"},
    "ds.name": {"en": "Studio dataset name", "zh": "工作室数据集名称"},
    "ds.overwrite": {"en": "Overwrite", "zh": "覆盖"},
    "ds.save": {"en": "Save as studio dataset", "zh": "保存为工作室数据集"},
    "ds.pick_first": {"en": "Pick a catalog entry, a file in the data dir, or upload one.",
                      "zh": "请选择目录中的数据集、数据目录中的文件，或上传文件。"},
    "ds.preview": {"en": "Preview (first 20 rows)", "zh": "预览（前 20 行）"},
    "ds.report": {"en": "Validation report", "zh": "校验报告"},
    "ds.hist": {"en": "Token lengths", "zh": "Token 长度分布"},
    "ds.studio": {"en": "Studio datasets (every training tab lists them)", "zh": "工作室数据集（各训练标签页均可选用）"},
    "ds.saved": {"en": "Saved studio dataset {name} ({rows} rows)", "zh": "已保存工作室数据集 {name}（{rows} 行）"},
    "ds.uploaded": {"en": "Uploaded to {path}", "zh": "已上传到 {path}"},
    # training tabs (shared)
    "train.recipe": {"en": "Recipe", "zh": "配方"},
    "train.command": {"en": "Command (runs the same job from a shell)", "zh": "命令（可在终端中运行同一任务）"},
    "train.start": {"en": "Train", "zh": "开始训练"},
    "train.stop": {"en": "Stop", "zh": "停止"},
    "train.log": {"en": "Log", "zh": "日志"},
    "train.curves": {"en": "Loss curves", "zh": "损失曲线"},
    "train.queued": {"en": "Job {job} queued.", "zh": "任务 {job} 已加入队列。"},
    "train.stopping": {"en": "Stopping {job}…", "zh": "正在停止 {job}……"},
    "train.nothing_to_stop": {"en": "No running or queued job to stop.", "zh": "没有可停止的运行中或排队任务。"},
    "group.model": {"en": "Model", "zh": "模型"},
    "group.data": {"en": "Data", "zh": "数据"},
    "group.training": {"en": "Training", "zh": "训练"},
    "group.lora": {"en": "LoRA", "zh": "LoRA"},
    "group.output": {"en": "Output and checkpoints", "zh": "输出与检查点"},
    "group.launcher": {"en": "Launcher (accelerate / deepspeed, ZeRO, processes, nodes)",
                       "zh": "启动器（accelerate / deepspeed、ZeRO、进程、节点）"},
    "launch.launcher": {"en": "Launcher", "zh": "启动器"},
    "launch.preset": {"en": "Preset", "zh": "预设"},
    "launch.nproc": {"en": "Processes per machine", "zh": "每台机器进程数"},
    "launch.zero": {"en": "ZeRO stage (none = no DeepSpeed)", "zh": "ZeRO 阶段（none = 不用 DeepSpeed）"},
    "launch.offload": {"en": "ZeRO CPU offload", "zh": "ZeRO CPU 卸载"},
    "launch.machines": {"en": "Machines", "zh": "机器数"},
    "launch.rank": {"en": "This machine's rank", "zh": "本机序号"},
    "launch.main_ip": {"en": "Main machine IP", "zh": "主节点 IP"},
    "launch.main_port": {"en": "Main port (0 = free port)", "zh": "主端口（0 = 自动）"},
    "launch.hostfile": {"en": "Hostfile (deepspeed multi-node: one `host slots=N` per line)",
                        "zh": "Hostfile（deepspeed 多节点：每行 `host slots=N`）"},
    # jobs tab
    "jobs.pick": {"en": "Job", "zh": "任务"},
    "jobs.resume": {"en": "Resume", "zh": "继续"},
    "jobs.rerun": {"en": "Re-run with edits", "zh": "修改后重跑"},
    "jobs.delete": {"en": "Delete", "zh": "删除"},
    "jobs.confirm_delete": {"en": "Really delete? Click to confirm", "zh": "确定删除？再次点击确认"},
    "jobs.config": {"en": "Config", "zh": "配置"},
    "jobs.none_selected": {"en": "Pick a job first.", "zh": "请先选择一个任务。"},
    "jobs.stopped": {"en": "Stopping {job}.", "zh": "正在停止 {job}。"},
    "jobs.resumed": {"en": "{job} resumes from its last checkpoint.", "zh": "{job} 将从最近的检查点继续。"},
    "jobs.deleted": {"en": "{job} deleted.", "zh": "{job} 已删除。"},
    "jobs.loaded": {"en": "{job}'s settings are loaded: edit them, then Train.",
                    "zh": "已载入 {job} 的设置：修改后点击开始训练。"},
    # messages
    "msg.no_gpu": {"en": "no GPU: jobs run on CPU", "zh": "无 GPU：任务在 CPU 上运行"},
    "msg.preparing": {"en": "Preparing bundled models…", "zh": "正在准备内置模型……"},
    "msg.prepare_running": {"en": "Preparation is already running.", "zh": "准备任务已在运行。"},
}


def t(key: str, lang: str = "en") -> str:
    entry = STRINGS.get(key)
    if entry is None:
        return key
    return entry.get(lang) or entry["en"]
