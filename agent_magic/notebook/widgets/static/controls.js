// Controls shown while a turn runs: a Stop button and a status line.
function render({ model, el: root }) {
  const box = document.createElement("div");
  box.className = "am-controls";
  const stop = document.createElement("button");
  stop.className = "am-btn am-btn-danger am-stop";
  stop.textContent = "Stop";
  const status = document.createElement("span");
  status.className = "am-controls-status";
  box.append(stop, status);
  root.append(box);
  function update() {
    const running = model.get("running");
    stop.disabled = !running;
    stop.style.display = running ? "" : "none";
    status.textContent = model.get("status");
  }
  stop.addEventListener("click", () => {
    stop.disabled = true;
    model.send({ type: "stop" });
  });
  model.on("change", update);
  update();
  model.send({ type: "rendered" });
}

export default { render };
