"""What the framework apps of tests/test_asgi_frameworks.py share: the
streamed parts and the websocket echo (each framework's WebSocket has
receive_text() and send_text(); its own exception says the client left)."""
import asyncio


async def parts(template):
    for i in range(5):
        yield template.format(i)
        await asyncio.sleep(0.01)


async def echo_text(websocket, disconnected):
    """Send every text message back until the client leaves."""
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except disconnected:
        pass
