// Wires index.html to chat-client.js. Text goes into the page with textContent only:
// model output is untrusted.
import { ChatClient } from "./chat-client.js";

const $ = (selector) => document.querySelector(selector);
const client = new ChatClient(window.location.origin);
let conversation = null;
let answerId = null;

function log(line) {
  const item = document.createElement("li");
  item.textContent = line;
  $("#log").append(item);
}

function show(status, text) {
  $("#answer-status").textContent = status;
  $("#answer-status").dataset.status = status;
  if (text !== undefined) $("#answer").textContent = text;
}

$("#login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  try {
    await client.logIn(form.get("username"), form.get("password"));
    conversation = await client.createConversation({ title: "JavaScript example" });
    log(`conversation ${conversation.id}`);
    await client.openStream(conversation.id, {
      onStart: (message) => {
        // Only this page sends in this conversation: the answer starting is ours
        // (its events can arrive before the send's response does).
        answerId = message.id;
        $("#answer").dataset.messageId = answerId;
        show(message.status, "");
        log(`message_start ${message.id}`);
      },
      onDelta: (id, text, whole) => {
        if (id === answerId) show("streaming", whole);
      },
      onEnd: (id, data, whole) => {
        log(`message_end ${id}: ${data.status}`);
        if (id !== answerId) return;
        show(data.status, whole);
        $("#stop").disabled = true;
      },
      onAnswerError: (data) => log(`error ${data.code}: ${data.message}`),
      onReconnect: (lastEventId) => log(`reconnected with Last-Event-ID ${lastEventId}`),
      onClosed: (reason) => log(`stream closed: ${reason}`),
    });
    log("stream open");
    event.target.hidden = true;
    $("#composer").hidden = false;
  } catch (error) {
    log(`failed: ${error.message}`);
  }
});

$("#composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const sent = await client.sendMessage(conversation.id, new FormData(event.target).get("content"));
    if (answerId !== sent.assistant_message.id) {
      answerId = sent.assistant_message.id;
      $("#answer").dataset.messageId = answerId;
      show(sent.assistant_message.status, "");
    }
    log(`sent; answer ${answerId}`);
    $("#stop").disabled = false;
  } catch (error) {
    log(`failed: ${error.message}`); // e.g. 409 run_active while an answer streams
  }
});

$("#stop").addEventListener("click", async () => {
  try {
    const answer = await client.cancel(answerId);
    log(`stop: the answer is ${answer.status}`);
  } catch (error) {
    log(`failed: ${error.message}`); // 409 message_finished: it ended first
  }
});
