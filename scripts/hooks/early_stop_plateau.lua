-- Stops training when the loss has stopped improving.
--
-- Tracks an exponential moving average (EMA) of the step loss and remembers its best value. When
-- the EMA has not beaten the best by at least MIN_DELTA (relative) for PATIENCE steps, it asks the
-- trainer to stop (the trainer writes a checkpoint first).
--
-- Use: "lua_hooks": ["scripts/hooks/early_stop_plateau.lua"] and edit the constants below.

local PATIENCE = 500 -- steps without a new best EMA before stopping
local EMA_DECAY = 0.98 -- weight of the past in the EMA (0.98: about the last 50 steps)
local MIN_DELTA = 1e-3 -- relative improvement that counts as a new best
local WARMUP = 100 -- no stop before this step

local ema, best, best_step

st.on("on_step_end", function(ev)
  local loss = ev.loss
  if type(loss) ~= "number" or loss ~= loss then return end -- no loss or NaN
  if ema == nil then ema = loss else ema = EMA_DECAY * ema + (1 - EMA_DECAY) * loss end
  if best == nil or ema < best * (1 - MIN_DELTA) then
    best, best_step = ema, ev.step
    return
  end
  if ev.step >= WARMUP and ev.step - best_step >= PATIENCE then
    st.log("info", string.format("loss EMA %.5f has not improved on %.5f (step %d) for %d steps",
      ema, best, best_step, ev.step - best_step))
    st.stop(string.format("loss plateau: no EMA improvement for %d steps", PATIENCE))
    return true -- one request is enough: unregister
  end
end)
