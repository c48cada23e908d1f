# The load client from the seed's task-ingestion test plan, verbatim.
import argparse
import requests
import time
import concurrent.futures

def send_request_and_process_tasks(url, timeout):
    """
    Sends a request to the specified URL and calculates the number of tasks processed

    Args:
        url (str): The endpoint to send the request to.

    Returns:
        int: Number of tasks processed, or None if the request fails or times out.
    """
    try:
        start_time = time.time()

        # Send the request (adjust method, headers, or data as needed)
        response = requests.get(url, params={"timeout": timeout})
        response.raise_for_status()  # Raise an error for bad status codes

        tasks = response.json().get('tasks_executed')

        elapsed_time = time.time() - start_time

        print(f"Processed {tasks} tasks in {elapsed_time:.2f} seconds.")
        return tasks

    except requests.exceptions.RequestException as e:
        print(f"Request failed: {e}")
        return None
    except Exception as e:
        print(f"Error processing tasks: {e}")
        return None

def run_with_timeout(url, timeout=25, max_workers=1):
    """
    Runs the request and task processing with a timeout.

    Returns:
        int: Number of tasks processed, or None if timeout or error occurs.
    """
    data = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max_workers) as executor:
        futures = [executor.submit(send_request_and_process_tasks, url, timeout) for _ in range(max_workers)]
        for future in concurrent.futures.as_completed(futures):
            try:
                data += future.result()
            except Exception as exp:
                print("%s" % (exp))

    return data

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run a task with configurable timeout and executors.")

    # Add arguments
    parser.add_argument(
        "--url",
        type=str,
        default="https://api.example.com/tasks",
        help="The API endpoint URL to send the request to. (default: https://api.example.com/tasks)"
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=25,
        help="The maximum time in seconds to wait for the operation to complete. (default: 25)"
    )
    parser.add_argument(
        "--max_workers",
        type=int,
        default=1,
        help="The number of worker threads to use for concurrent tasks. (default: 1)"
    )

    args = parser.parse_args()

    print(f"Running with URL: {args.url}, Timeout: {args.timeout}s, Workers: {args.max_workers}")
    tasks_processed = run_with_timeout(args.url, args.timeout, args.max_workers)

    if tasks_processed is not None:
        print(f"Total tasks processed: {tasks_processed}. Request rate: {tasks_processed/args.timeout}/s")
    else:
        print("No tasks processed due to timeout or error.")
